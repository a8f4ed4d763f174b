"""The notification fault tests' world: users in a real database, the weekly report sent to them
through real worker processes started as the Procfile starts them, and what the mail sink and
Redis say happened.

The workers are the Procfile's ``worker`` line verbatim (its prefetch, processes, threads and
shutdown timeout; the production heartbeat timeout and maintenance chance, which it leaves at
their defaults). A test sets only addresses: Redis, the database, the SMTP sink, its own var
directory and metrics port per worker (two workers of one type on one machine would otherwise
share both). The outbox relay runs in a scheduler process as the Procfile starts it, on the
relay-only schedule (``tests.support.relay_schedule``): the real schedule's daily digest and
weekly report would mail these users too.
"""

from __future__ import annotations

import collections
import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from app.db.models import Notification, NotificationStatus, User, utcnow
from app.inspection import list_dead_letters
from app.local.ports import free_port
from app.local.sinks import read_records
from app.local.supervisor import procfile_commands
from app.outbox import outbox_counts
from app.senders import email_message_id
from tests.support.processes import VENV_BIN, fintask_env

#: The process type that consumes the ``emails`` queue the weekly report's notifications use.
PROCESS_TYPE = "worker"
#: The queues of the weekly report: its chunks' and its emails'.
WORKLOAD_QUEUES = ("fanout", "emails")
#: The week every test reports on: a fixed one, so the dedup keys (and Message-IDs) are known.
WEEK = "2026-W10"

RELAY_SCHEDULER = [str(VENV_BIN / "fintask"), "process", "scheduler", "--"]
RELAY_SCHEDULER += [str(VENV_BIN / "python"), "-m", "scheduler", "tests.support.relay_schedule"]


def procfile_worker() -> list[str]:
    """The Procfile's ``worker`` command line, word for word."""
    return shlex.split(procfile_commands()[PROCESS_TYPE])


def procfile_option(name: str) -> int:
    """An integer option of the Procfile's ``worker`` line (``--threads``, ``--processes``)."""
    words = procfile_worker()
    return int(words[words.index(name) + 1])


def threads_per_worker() -> int:
    """Worker threads of one ``worker`` (all its processes): how many sends it can have open."""
    return procfile_option("--processes") * procfile_option("--threads")


def worker_env(
    *, redis_url: str, database_url: str, smtp_port: int, var_dir: Path
) -> dict[str, str]:
    """One worker's environment: addresses only (its own var directory and metrics port)."""
    return fintask_env(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        FINTASK_VAR_DIR=str(var_dir),
        METRICS_PORT_WORKER=str(free_port()),
        METRICS_HOST="127.0.0.1",
    )


def create_users(engine: Engine, count: int) -> None:
    """``count`` active users, ids 1 to ``count``, each with an address of their own."""
    now = utcnow()
    rows = [
        {
            "id": n,
            "email": recipient(n),
            "name": f"User {n}",
            "is_active": True,
            "created_at": now,
        }
        for n in range(1, count + 1)
    ]
    with engine.begin() as connection:
        connection.execute(insert(User), rows)


def recipient(user_id: int) -> str:
    return f"user{user_id}@example.com"


def user_id(address: str) -> int:
    """The user ``recipient`` gave ``address``."""
    return int(address.removeprefix("user").removesuffix("@example.com"))


def expected_message_id(user_id: int) -> str:
    """The Message-ID every send of user ``user_id``'s report carries."""
    return email_message_id(f"weekly-report:{WEEK}:{user_id}")


def send_weekly_report(env: dict[str, str]) -> None:
    """Start the report run the public way: ``fintask reports send --week WEEK``."""
    subprocess.run(
        [str(VENV_BIN / "fintask"), "reports", "send", "--week", WEEK],
        env=env,
        check=True,
        capture_output=True,
        timeout=180,
    )


def sent_count(engine: Engine) -> int:
    """Notifications the database says were sent."""
    with engine.connect() as connection:
        query = select(func.count()).where(Notification.status == NotificationStatus.SENT.value)
        return int(connection.scalar(query) or 0)


def status_counts(engine: Engine) -> dict[str, int]:
    """Notifications by status."""
    with engine.connect() as connection:
        query = select(Notification.status, func.count()).group_by(Notification.status)
        return {status: int(count) for status, count in connection.execute(query)}


def mails_received(mailbox: Path) -> int:
    """Complete mails the sink wrote so far (a cheap count of its finished lines)."""
    if not mailbox.exists():
        return 0
    return mailbox.read_bytes().count(b"\n")


@dataclass(frozen=True)
class Deliveries:
    """What the sink received, judged against the users who should each get one mail."""

    users: int
    lost: list[int]
    #: Recipients who got more than one mail, with the Message-ID of each copy.
    repeated: dict[str, list[str]]
    #: Mails to someone who is not one of the users.
    strangers: list[str]

    @property
    def doubled(self) -> int:
        """Extra copies: mails beyond the first of each recipient."""
        return sum(len(ids) - 1 for ids in self.repeated.values())

    @property
    def repeated_users(self) -> set[int]:
        return {user_id(address) for address in self.repeated}

    def repeats_with_another_key(self) -> dict[str, list[str]]:
        """Repeated recipients whose copies do not all carry their notification's Message-ID."""
        wrong = {}
        for address, ids in self.repeated.items():
            if set(ids) != {expected_message_id(user_id(address))}:
                wrong[address] = ids
        return wrong


def deliveries(mailbox: Path, users: int) -> Deliveries:
    """Each user's mails in the sink's file: who got none, who got more than one."""
    by_recipient: dict[str, list[str]] = collections.defaultdict(list)
    for mail in read_records(mailbox):
        for address in mail["to"]:
            by_recipient[address].append(mail["message_id"])
    expected = {recipient(n) for n in range(1, users + 1)}
    return Deliveries(
        users=users,
        lost=[n for n in range(1, users + 1) if recipient(n) not in by_recipient],
        repeated={a: ids for a, ids in by_recipient.items() if len(ids) > 1},
        strangers=sorted(set(by_recipient) - expected),
    )


def every_user_mailed(mailbox: Path, users: int) -> Callable[[], bool]:
    """A condition for ``wait_until``: the sink holds at least one mail for every user.

    Cheap until the mail count gets there (parsing 10,000 lines 20 times a second would
    take a core from the workers); then each user's mail is looked for.
    """

    def check() -> bool:
        time.sleep(0.5)
        if mails_received(mailbox) < users:
            return False
        return not deliveries(mailbox, users).lost

    return check


def at_least(count: Callable[[], int], target: int) -> Callable[[], bool]:
    """A condition for ``wait_until`` that samples ``count`` twice a second."""

    def check() -> bool:
        time.sleep(0.5)
        return count() >= target

    return check


class DeadLettered(AssertionError):
    """A message of the weekly report ended in the dead letters: its work waits for an operator
    (``fintask dlq requeue``)."""


def dead_letters(client: redis.Redis) -> list[str]:
    """The weekly report's dead letters, each as ``actor(kwargs): reason``."""
    return [
        f"{dead.actor_name}({dead.message.get('kwargs')}): {dead.reason}"
        for dead in list_dead_letters(client, WORKLOAD_QUEUES)
    ]


def assert_no_dead_letters(found: list[str]) -> None:
    if found:
        raise DeadLettered(f"{len(found)} dead letter(s) of the weekly report: {found}")


def quiet(client: redis.Redis, engine: Engine) -> bool:
    """Nothing of the weekly report left to happen by itself: its queues and every ack set empty,
    no outbox row waiting for the relay, no notification pending or being sent."""
    if any(client.llen(f"dramatiq:{queue}") for queue in WORKLOAD_QUEUES) or ack_sets(client):
        return False
    with Session(engine) as session:
        if outbox_counts(session).unsent:
            return False
    return set(status_counts(engine)) <= {NotificationStatus.SENT.value}


def settled(done: Callable[[], bool], *, client: redis.Redis, engine: Engine) -> Callable[[], bool]:
    """``done``, or a dead letter of the weekly report with the rest of it quiet: the run then
    waits for an operator, and a test can say so at once instead of at its timeout."""

    def check() -> bool:
        if done():
            return True
        return bool(dead_letters(client)) and quiet(client, engine)

    return check


def answering(condition: Callable[[], object]) -> Callable[[], bool]:
    """``condition``, false while Redis does not answer (down, or loading its data)."""

    def check() -> bool:
        try:
            return bool(condition())
        except redis.ConnectionError:  # BusyLoadingError included
            return False

    return check


def ack_sets(client: redis.Redis) -> dict[str, int]:
    """Every non-empty ack set (``dramatiq:__acks__.<broker id>.<queue>``) and its size."""
    sizes = {}
    for key in client.scan_iter("dramatiq:__acks__.*"):
        size = int(client.scard(key))
        if size:
            sizes[_text(key)] = size
    return sizes


def consumer_pids(client: redis.Redis) -> dict[str, int]:
    """Broker id -> pid of every worker process that registered as a consumer."""
    return {
        _text(broker_id): int(json.loads(entry)["pid"])
        for broker_id, entry in client.hgetall("fintask:consumers").items()
    }


def broker_ids_of(client: redis.Redis, worker_pid: int) -> set[str]:
    """Broker ids of the processes of the worker whose master is ``worker_pid``.

    Each worker runs in its own session (``tests.support.processes.running``), so its
    processes are those of the process group ``worker_pid``.
    """
    ids = set()
    for broker_id, pid in consumer_pids(client).items():
        try:
            if os.getpgid(pid) == worker_pid:
                ids.add(broker_id)
        except ProcessLookupError:
            continue
    return ids


def _broker_id(ack_key: str) -> str:
    return ack_key.removeprefix("dramatiq:__acks__.").split(".", 1)[0]


def held_notifications(client: redis.Redis, broker_ids: set[str]) -> set[int]:
    """Notifications whose delivery message sits in the ack sets of ``broker_ids``.

    Read after those processes are dead and before recovery: exactly what they had fetched.
    """
    held = set()
    for key in ack_sets(client):
        if _broker_id(key) not in broker_ids:
            continue
        queue = key.removeprefix("dramatiq:__acks__.").split(".", 1)[1]
        redis_ids = list(client.smembers(key))
        if not redis_ids:
            continue
        for data in client.hmget(f"dramatiq:{queue}.msgs", redis_ids):
            kwargs = json.loads(data)["kwargs"] if data else {}
            if "notification_id" in kwargs:
                held.add(int(kwargs["notification_id"]))
    return held


def all_sent(engine: Engine, notification_ids: set[int]) -> bool:
    """Whether each of ``notification_ids`` is marked sent."""
    with engine.connect() as connection:
        query = select(func.count()).where(
            Notification.id.in_(notification_ids),
            Notification.status == NotificationStatus.SENT.value,
        )
        return int(connection.scalar(query) or 0) == len(notification_ids)


def users_of(engine: Engine, notification_ids: set[int]) -> set[int]:
    """The users ``notification_ids`` are for."""
    with engine.connect() as connection:
        query = select(Notification.user_id).where(Notification.id.in_(notification_ids))
        return set(connection.scalars(query))


def heartbeats_since(client: redis.Redis, broker_ids: set[str], since_ms: int) -> bool:
    """Whether every process of ``broker_ids`` called Redis (a fetch beats) since ``since_ms``."""
    scores = client.zmscore("dramatiq:__heartbeats__", list(broker_ids))
    return all(score is not None and score >= since_ms for score in scores)


def held_by(client: redis.Redis, broker_ids: set[str]) -> int:
    """Messages in the ack sets of ``broker_ids`` (fetched by those processes, not acked)."""
    return sum(size for key, size in ack_sets(client).items() if _broker_id(key) in broker_ids)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
