"""The Redis master is SIGKILLed under load and Sentinel promotes its replica: the workers, the
scheduler and the web process follow the new master by themselves, and the test counts what
the failover lost (docs/reliability.md, "Failover").

The deploy is ``tests.support.redis_servers.SentinelDeploy``: a master, one replica, three
sentinels, ``down-after-milliseconds`` 5,000 (the Sentinel documentation's example, as a deploy
that wants failover in seconds sets it). Every process is the Procfile's, on
``REDIS_URL=redis+sentinel://...``, the worker with the reliability actor beside fintask's.

Two producers in this process send without pause up to and through the kill: one as every
fintask process sends by default, one with the durable enqueue (``REDIS_WAIT_REPLICAS=1``).
Replication is asynchronous, so a message the master acknowledged may not have reached the
replica when the master died: "lost" is a send that returned (the caller was told it is queued)
and of which the new master keeps no trace, neither queued nor run. The durable producer must
lose none. Once the replica is promoted no replica is left, so durable sends fail
(``NotReplicated``) until the killed server is started again on its address, as a crashed host
reboots, and Sentinel makes it the new master's replica. Before the kill, the cost of the
durable enqueue is measured on the healthy deploy: the time of one send, one after the other,
with and without ``WAIT``.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from app.db.migrate import upgrade
from app.local.ports import free_port
from app.local.supervisor import procfile_commands
from app.redis_client import redis_pool
from app.wakeup_broker import WakeupRedisBroker
from tests.support.processes import running, wait_until
from tests.support.procfile import (
    booted_processes,
    procfile_command,
    procfile_env,
    procfile_worker,
)
from tests.support.recovery import runs, send_work
from tests.support.redis_servers import SentinelDeploy
from tests.support.reliability_actors import QUEUE

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

#: Sends timed one after the other, with and without WAIT, on the healthy deploy.
TIMED_SENDS = 500
#: Sends each producer has had acknowledged before the kill, and after the promotion.
BEFORE_KILL = 300
AFTER_PROMOTION = 100
SENT = re.compile(r"Tick \S+ of \w+: sent as message")


class Producer(threading.Thread):
    """Sends ``work`` messages without pause until told to stop, keeping the ids of the sends
    that returned, in order, and counting those that raised (the outage)."""

    def __init__(self, broker: WakeupRedisBroker) -> None:
        super().__init__(daemon=True)
        self.broker = broker
        self.acknowledged: list[str] = []
        self.failed = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.acknowledged.append(send_work(self.broker))
            except redis.RedisError:
                self.failed += 1
                time.sleep(0.1)


def send_times_ms(broker: WakeupRedisBroker) -> list[float]:
    times = []
    for _ in range(TIMED_SENDS):
        started = time.perf_counter()
        send_work(broker)
        times.append((time.perf_counter() - started) * 1000)
    return times


def traces(client: redis.Redis) -> set[str]:
    """Every message id the master holds a trace of: run, or still queued."""
    queued = {key.decode() for key in client.hkeys(f"dramatiq:{QUEUE}.msgs")}
    return queued | set(runs(client))


def test_a_master_killed_under_load_fails_over_and_fintask_follows(tmp_path: Path, record_property):
    with SentinelDeploy(tmp_path / "redis") as deploy:
        url = deploy.url
        database_url = f"sqlite:///{tmp_path / 'web.db'}"
        upgrade(database_url)
        port = free_port()
        env = procfile_env(var_dir=tmp_path / "var", REDIS_URL=url, DATABASE_URL=database_url)
        web_env = {**env, "PORT": str(port), "HOST": "127.0.0.1"}
        client = redis.Redis(connection_pool=redis_pool(url, socket_timeout=10))
        scheduler = procfile_command("scheduler", "tests.support.scheduler_actors")
        web = ["bash", "-c", procfile_commands()["web"]]  # the platform's shell expands $PORT
        logs = {name: tmp_path / f"{name}.log" for name in ("worker", "scheduler", "web")}

        def healthy() -> bool:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
            except httpx.HTTPError:
                return False
            return answer.status_code == 200

        # Given a worker, the scheduler and the web process on the Sentinel URL
        with (
            running(procfile_worker("tests.support.reliability_actors"), env, logs["worker"]) as w,
            running(scheduler, env, logs["scheduler"]),
            running(web, web_env, logs["web"]),
        ):
            wait_until(lambda: booted_processes(client, w) == 2, timeout_s=180, what="boot")
            wait_until(healthy, timeout_s=180, what="the web's first /healthz")
            plain = WakeupRedisBroker(url=url, middleware=[])
            durable = WakeupRedisBroker(url=url, middleware=[], wait_replicas=1)
            plain_ms, durable_ms = send_times_ms(plain), send_times_ms(durable)

            # When the master is SIGKILLed while two producers send as fast as they can
            producers = {"default": Producer(plain), "durable": Producer(durable)}
            for producer in producers.values():
                producer.start()
            wait_until(
                lambda: all(len(p.acknowledged) >= BEFORE_KILL for p in producers.values()),
                timeout_s=120,
                what="both producers to be sending",
            )
            deploy.kill_master()
            killed_at = time.monotonic()
            acked_at_kill = {name: len(p.acknowledged) for name, p in producers.items()}
            scheduler_log_at_kill = logs["scheduler"].stat().st_size
            deploy.wait_promoted()
            promoted_s = time.monotonic() - killed_at
            acked_at_promotion = {name: len(p.acknowledged) for name, p in producers.items()}

            def sending_again(name: str) -> bool:
                acknowledged = len(producers[name].acknowledged)
                return acknowledged >= acked_at_promotion[name] + AFTER_PROMOTION

            wait_until(lambda: sending_again("default"), timeout_s=180, what="sends again")
            sending_again_s = time.monotonic() - killed_at
            durable_failed_alone = producers["durable"].failed
            deploy.master.restart()
            wait_until(lambda: sending_again("durable"), timeout_s=180, what="durable sends")
            durable_again_s = time.monotonic() - killed_at
            for producer in producers.values():
                producer.stopping.set()
                producer.join(60)

            # Then what was sent after the promotion runs, on the worker that was running
            after = {
                message_id
                for name, p in producers.items()
                for message_id in p.acknowledged[acked_at_promotion[name] :]
            }
            wait_until(
                lambda: after <= set(runs(client)),
                timeout_s=300,
                what="the messages sent after the failover to run",
            )
            processed_s = time.monotonic() - killed_at
            # And the web's /healthz is healthy again, and the scheduler sends its ticks
            wait_until(healthy, timeout_s=120, what="the web's /healthz after the failover")
            wait_until(
                lambda: SENT.search(logs["scheduler"].read_text()[scheduler_log_at_kill:]),
                timeout_s=180,
                what="a tick sent after the failover",
            )
            ticking_s = time.monotonic() - killed_at
            kept = traces(client)
            lost = {
                name: [m for m in p.acknowledged[: acked_at_promotion[name]] if m not in kept]
                for name, p in producers.items()
            }
            for broker in (plain, durable):
                broker.client.close()
        client.close()

    figures = {
        "send_ms_median_default": round(statistics.median(plain_ms), 3),
        "send_ms_median_durable": round(statistics.median(durable_ms), 3),
        "send_ms_p99_default": round(statistics.quantiles(plain_ms, n=100)[98], 3),
        "send_ms_p99_durable": round(statistics.quantiles(durable_ms, n=100)[98], 3),
        "acknowledged_before_kill_default": acked_at_kill["default"],
        "acknowledged_before_kill_durable": acked_at_kill["durable"],
        "lost_default": len(lost["default"]),
        "lost_durable": len(lost["durable"]),
        "failed_sends_default": producers["default"].failed,
        "failed_sends_durable": producers["durable"].failed,
        "promoted_s": round(promoted_s, 1),
        "sending_again_s": round(sending_again_s, 1),
        "durable_failed_until_old_master_restarted": durable_failed_alone,
        "durable_sending_again_s": round(durable_again_s, 1),
        "processed_s": round(processed_s, 1),
        "ticking_s": round(ticking_s, 1),
    }
    for name, value in figures.items():
        record_property(name, value)
    print(f"\nSentinel failover: {figures}")
    assert lost["durable"] == [], "a send that waited for the replica was lost"
