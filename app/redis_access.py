"""What each process type may do in Redis, and the check at start that its Redis lets it.

``COMMANDS`` lists, per process type, every Redis command its code issues: the calls of fintask
and of Dramatiq's Redis broker, and the commands their Lua scripts run (Redis checks a script's
commands and keys against the caller's ACL as well). ``ops/redis-users.acl`` grants exactly
these, on the keys ``dramatiq`` (the namespace, which the scripts take as ``KEYS[1]``),
``dramatiq:*`` and ``fintask:*`` (``tests/unit/test_redis_urls.py`` holds the file to this
list). A worker consumes (``LPOP`` in the fetch, ``BLPOP`` on the wake-up lists); the web
process and the CLI read queues and run the operators' actions (cancel, purge, requeue) but
pop nothing; the scheduler sends ticks and reads the schedule's state. Batches
(``chunking.batch_scripts``, under ``BATCH_PREFIX``) are the worker's and the web's: a worker
creates a run's batch, records members (``SETBIT``) and seals (``HSETNX``); the web and the CLI
read progress, cancel (which fires the callbacks and may settle a parent batch) and start a
report (``fintask reports send`` creates its batch: ``ZREMRANGEBYRANK`` trims the listing); the
scheduler only sends the ticks that start runs on a worker. No process type needs ``KEYS``,
``FLUSHALL``, ``CONFIG`` or any other admin command.

``check_redis_access`` runs when a process builds its broker: a Redis that is there but will not
serve the process stops it at once, in one line naming ``REDIS_URL`` and the cause, instead of
every call failing later. A Redis that does not answer is no such error: the processes wait for
it and reconnect (docs/reliability.md).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping

import redis

from app.redis_client import no_retry, redis_pool, sentinel_manager
from app.redis_urls import is_sentinel_url
from app.settings import SettingsError, hide_credentials

logger = logging.getLogger(__name__)

#: The prefix of fintask's batches (``chunking.batches``): under ``fintask:``, so the ACL users
#: may touch them. The library's own default (``chunking:batch``) is for those who lift it.
BATCH_PREFIX = "fintask:batch"

#: A sample of each command's arguments, on keys of fintask's namespaces, for ``ACL DRYRUN``
#: (which checks a command's arity and keys as well as the command).
PROBES: Mapping[str, tuple[str, ...]] = {
    "ping": (),
    "hello": ("3",),
    "select": ("0",),
    "multi": (),
    "exec": (),
    "discard": (),
    "wait": ("1", "1"),
    "eval": ("return 1", "1", "dramatiq"),
    "evalsha": ("0" * 40, "1", "dramatiq"),
    "script|load": ("return 1",),
    "script|exists": ("0" * 40,),
    "time": (),
    "get": ("fintask:probe",),
    "mget": ("fintask:probe",),
    "set": ("fintask:probe", "1"),
    "getdel": ("fintask:probe",),
    "incr": ("fintask:probe",),
    "del": ("dramatiq:probe",),
    "exists": ("dramatiq:probe",),
    "expire": ("fintask:probe", "1"),
    "pexpire": ("dramatiq:probe", "1"),
    "expireat": ("fintask:probe", "1"),
    "ttl": ("fintask:probe",),
    "hget": ("dramatiq:probe", "f"),
    "hmget": ("dramatiq:probe", "f"),
    "hset": ("dramatiq:probe", "f", "v"),
    "hdel": ("dramatiq:probe", "f"),
    "hexists": ("dramatiq:probe", "f"),
    "hgetall": ("fintask:probe",),
    "hvals": ("fintask:probe",),
    "hlen": ("dramatiq:probe",),
    "hincrby": ("fintask:probe", "f", "1"),
    "hsetnx": ("fintask:probe", "f", "v"),
    "hscan": ("dramatiq:probe", "0"),
    "sadd": ("dramatiq:probe", "m"),
    "srem": ("dramatiq:probe", "m"),
    "smembers": ("dramatiq:probe",),
    "scard": ("dramatiq:probe",),
    "sismember": ("fintask:probe", "m"),
    "zadd": ("dramatiq:probe", "1", "m"),
    "zrem": ("dramatiq:probe", "m"),
    "zrange": ("dramatiq:probe", "0", "1"),
    "zrevrange": ("dramatiq:probe", "0", "1"),
    "zrangebyscore": ("dramatiq:probe", "0", "1"),
    "zrevrangebyscore": ("dramatiq:probe", "1", "0"),
    "zremrangebyscore": ("fintask:probe", "0", "1"),
    "zremrangebyrank": ("fintask:probe", "0", "1"),
    "zcard": ("dramatiq:probe",),
    "zscore": ("dramatiq:probe", "m"),
    "zmscore": ("dramatiq:probe", "m"),
    "zcount": ("dramatiq:probe", "0", "1"),
    "setbit": ("fintask:probe", "0", "1"),
    "lpush": ("dramatiq:probe", "m"),
    "rpush": ("dramatiq:probe", "m"),
    "lrange": ("dramatiq:probe", "0", "1"),
    "lindex": ("dramatiq:probe", "0"),
    "lpos": ("dramatiq:probe", "m"),
    "llen": ("dramatiq:probe",),
    "lrem": ("dramatiq:probe", "0", "m"),
    "ltrim": ("dramatiq:probe", "0", "1"),
    "lpop": ("dramatiq:probe",),
    "blpop": ("dramatiq:probe", "1"),
    "acl|dryrun": ("fintask-worker", "ping"),
}

#: Taking messages off a queue: the worker's alone.
CONSUMING = ("lpop", "blpop")

#: What the scheduler runs (read off ``MONITOR`` under a running scheduler, then its rarer
#: paths from the code): tick claims and their records, the schedule's state (pauses, resumes,
#: run-now requests, the last tick of each job), the enqueue of ticks (``dispatch.lua``) and
#: their wake-up tokens.
SCHEDULER = (
    *("ping", "hello", "select", "multi", "exec", "discard", "wait", "acl|dryrun"),
    *("eval", "evalsha", "script|load", "get", "mget", "set", "del", "pexpire"),
    *("hgetall", "hset", "smembers", "zadd", "rpush", "lrange", "ltrim"),
)

_WORKER = tuple(PROBES)
_WEB = tuple(command for command in PROBES if command not in CONSUMING)

#: Every command each process type issues. The CLI (``fintask``) is an operator's tool with the
#: web process's rights; so is the Celery bridge (``bridge_celery``) on fintask's Redis, where
#: it only enqueues and dead-letters (its Celery side, kombu's, is on ``CELERY_BROKER_URL``).
COMMANDS: Mapping[str, tuple[str, ...]] = {
    "worker": _WORKER,
    "worker_urgent": _WORKER,
    "web": _WEB,
    "cli": _WEB,
    "bridge_celery": _WEB,
    "scheduler": SCHEDULER,
}


def check_redis_access(url: str, *, process_type: str) -> None:
    """Stop this process, in one ``SettingsError`` line, if its Redis answers but will not
    serve it: no sentinel answers or none knows the master, the server's certificate does not
    verify, or its ACL user lacks a command of ``process_type``."""
    if is_sentinel_url(url):
        _check_sentinels(url)
    client = redis.Redis(
        connection_pool=redis_pool(url, socket_connect_timeout=5, retry=no_retry())
    )
    try:
        try:
            client.ping()
        except redis.ConnectionError as error:
            if _unverified(error):
                raise _refused(url, _unverified_reason("server's certificate", error)) from None
            return  # not answering: the process waits for it, as for any outage
        username = client.connection_pool.connection_kwargs.get("username")
        if username not in (None, "default"):
            _check_commands(client, url, str(username), process_type)
    finally:
        client.close()


def _unverified(error: redis.ConnectionError) -> bool:
    """Whether ``error`` is a TLS peer whose certificate this process does not trust."""
    return isinstance(error.__context__, ssl.SSLCertVerificationError)


def _unverified_reason(whose: str, error: redis.ConnectionError) -> str:
    return (
        f"the {whose} did not verify ({error}); give its CA as ?ssl_ca_certs=CA_FILE if it is "
        "not one of the system's"
    )


def _check_sentinels(url: str) -> None:
    master, sentinel = sentinel_manager(url)
    errors: list[str] = []
    unverified: redis.ConnectionError | None = None
    known: set[str] = set()
    for node in sentinel.sentinels:
        kwargs = node.get_connection_kwargs()
        try:
            masters = node.sentinel_masters()
            known.update(masters if isinstance(masters, dict) else ())
        except redis.RedisError as error:
            errors.append(f"{kwargs['host']}:{kwargs['port']}: {error}")
            if isinstance(error, redis.ConnectionError) and _unverified(error):
                unverified = error
    sentinel.close()
    if len(errors) == len(sentinel.sentinels):
        if unverified is not None:
            raise _refused(url, _unverified_reason("sentinels' certificate", unverified))
        raise _refused(url, f"no sentinel answered ({'; '.join(errors)})")
    if master not in known:
        monitored = ", ".join(sorted(known)) or "none"
        reason = f"no sentinel monitors a master named {master!r} (they monitor: {monitored})"
        raise _refused(url, reason)


def _check_commands(client: redis.Redis, url: str, username: str, process_type: str) -> None:
    """``ACL DRYRUN`` of each command ``process_type`` issues, as ``username``, in one round
    trip: every process makes this check at start, and a remote Redis is a millisecond away."""
    # A process type not listed (a one-off command of the platform's) needs what a worker may.
    commands = COMMANDS.get(process_type, COMMANDS["worker"])
    with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command("ACL", "DRYRUN", username, *command.split("|"), *PROBES[command])
        answers = pipe.execute(raise_on_error=False)
    for command, answer in zip(commands, answers, strict=True):
        if isinstance(answer, redis.ResponseError):
            logger.warning("Could not check the ACL rights of Redis user %r: %s", username, answer)
            return
        if redis.utils.str_if_bytes(answer) != "OK":
            raise _refused(
                url,
                f"Redis user {username!r} may not run {command.upper()}, which the "
                f"{process_type} process needs ({redis.utils.str_if_bytes(answer)}); "
                "ops/redis-users.acl has the rights of each process type",
            )


def _refused(url: str, reason: str) -> SettingsError:
    return SettingsError(f"REDIS_URL={hide_credentials(url)!r}: {reason}")
