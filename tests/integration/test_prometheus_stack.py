"""A real Prometheus, with the shipped ops/ config and rules, scrapes a running fintask.

The stack is the Procfile's ``web`` and ``worker`` under ``fintask run`` (private Redis,
migrated SQLite). Only the target lists and the intervals differ from what ops/ ships.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from app.local.ports import free_port
from app.local.stack import LocalStack
from app.settings import PROJECT_ROOT
from tests.support.processes import running, wait_until

OPS = PROJECT_ROOT / "ops"


def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    assert binary, "the prometheus server is missing: apt-get install prometheus"
    return binary


def shipped_config(directory: Path, env: dict[str, str]) -> Path:
    """ops/ copied to ``directory`` with targets at the stack's ports and 1 s intervals."""
    shutil.copytree(OPS, directory)
    config = directory / "prometheus.yml"
    text = config.read_text()
    for interval in ("scrape_interval: 15s", "evaluation_interval: 15s"):
        assert interval in text, f"ops/prometheus.yml no longer says {interval!r}"
        text = text.replace(interval, interval.replace("15s", "1s"))
    config.write_text(text)
    targets = {"web": env["WEB_PORT"], "worker": env["METRICS_PORT_WORKER"], "worker_urgent": None}
    for process_type, port in targets.items():
        listed = [{"targets": [f"127.0.0.1:{port}"]}] if port else []
        (directory / "targets" / f"{process_type}.json").write_text(json.dumps(listed))
    return config


#: Prometheus, the stack and the rules' first evaluations share a loaded 2-core machine.
READY_TIMEOUT_S = 120
SCRAPED_TIMEOUT_S = 120


class PrometheusApi:
    def __init__(self, port: int) -> None:
        self.root = f"http://127.0.0.1:{port}"
        self.url = f"{self.root}/api/v1"

    def ready(self) -> bool:
        """Whether Prometheus says it is ready to serve queries (``/-/ready``).

        Until then it answers 503 with a text body, while it replays its write-ahead log and
        loads the config and rules: a query before that is not an answer.
        """
        try:
            return httpx.get(f"{self.root}/-/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False  # not listening yet

    def get(self, path: str, **params: str) -> Any:
        """The JSON answer (a rejected query's error included), or None when there is none."""
        try:
            response = httpx.get(f"{self.url}/{path}", params=params, timeout=10)
        except httpx.TransportError:
            return None  # a timeout on a loaded machine: ask again
        if response.status_code == 503:
            return None  # not ready (again)
        return response.json()

    def answer(self, path: str, **params: str) -> Any:
        """The JSON answer, asked again until there is one."""
        answers: list[Any] = []

        def answered() -> bool:
            answers.append(self.get(path, **params))
            return answers[-1] is not None

        wait_until(answered, timeout_s=SCRAPED_TIMEOUT_S, what=f"an answer to {path} {params}")
        return answers[-1]

    def value(self, expr: str) -> float | None:
        """The single value ``expr`` evaluates to now, or None while there is none."""
        answer = self.get("query", query=expr)
        result = answer["data"]["result"] if answer else []
        return float(result[0]["value"][1]) if len(result) == 1 else None


def send_pings(redis_url: str) -> None:
    """Three pings that a worker answers; one without its token, which the consumer
    dead-letters unrun (its arguments do not bind); and a fraud check of an account that does
    not exist, which fails (NoResultFound) and, with no retry, is dead-lettered."""
    producer = RedisBroker(url=redis_url, middleware=[])
    producer.declare_queue("maintenance")
    producer.declare_queue("fraud")
    for i in range(3):
        producer.enqueue(Message("maintenance", "ping", (), {"token": f"t{i}"}, {}))
    producer.enqueue(Message("maintenance", "ping", (), {}, {}))
    missing = {"account_id": 404}
    producer.enqueue(Message("fraud", "check_new_account", (), missing, {"max_retries": 0}))
    producer.close()


def test_prometheus_scrapes_web_and_worker_with_the_shipped_config(tmp_path):
    binary = prometheus_binary()
    port = free_port()
    # The test session's BROKER_URL=stub:// would reach the processes: blank it, so they use Redis.
    stack = LocalStack(
        var_dir=tmp_path / "stack", process_types=["web", "worker"], extra_env={"BROKER_URL": ""}
    )
    with stack:
        config = shipped_config(tmp_path / "prometheus", stack.env)
        command = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        with running(command, dict(os.environ), tmp_path / "prometheus.log"):
            api = PrometheusApi(port)
            wait_until(api.ready, timeout_s=READY_TIMEOUT_S, what="Prometheus to be ready")
            send_pings(stack.env["REDIS_URL"])

            def scraped(expr: str, expected: float) -> None:
                wait_until(
                    lambda: api.value(expr) == expected,
                    timeout_s=SCRAPED_TIMEOUT_S,
                    what=f"{expr} == {expected}",
                )

            scraped('sum(dramatiq_messages_total{actor_name="ping"})', 3)
            failures = 'fintask_message_failures_total{actor_name="check_new_account"'
            scraped(failures + ',exception="NoResultFound"}', 1)
            scraped('sum(fintask_message_wait_seconds_count{queue_name="maintenance"})', 3)
            scraped('fintask_queue_messages{queue_name="maintenance",state="dead"}', 1)
            scraped('fintask_queue_messages{queue_name="fraud",state="dead"}', 1)
            scraped("fintask_consumers_alive", 2)  # the worker's two processes
            scraped('fintask_jobs{status="queued"}', 0)
            wait_until(
                lambda: rules_evaluated(api),
                timeout_s=SCRAPED_TIMEOUT_S,
                what="every alert rule evaluated",
            )
            rules = api.answer("rules")["data"]["groups"][0]["rules"]
            dashboard = [(expr, api.answer("query", query=expr)) for expr in dashboard_exprs()]

    assert {rule["name"]: rule["health"] for rule in rules} == {r["name"]: "ok" for r in rules}
    assert len(rules) == shipped_alert_count()
    failed = [(expr, answer) for expr, answer in dashboard if answer["status"] != "success"]
    assert not failed, f"dashboard queries Prometheus rejects: {failed}"


def shipped_alert_count() -> int:
    """How many alert rules ``ops/alerts.yml`` ships (one ``- alert:`` line each)."""
    lines = (PROJECT_ROOT / "ops" / "alerts.yml").read_text().splitlines()
    return sum(1 for line in lines if line.strip().startswith("- alert:"))


def rules_evaluated(api: PrometheusApi) -> bool:
    answer = api.get("rules")
    rules = [r for g in answer["data"]["groups"] for r in g["rules"]] if answer else []
    return bool(rules) and all(rule["health"] != "unknown" for rule in rules)


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((OPS / "grafana" / "fintask.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return [expr.replace("$__rate_interval", "1m") for expr in exprs]
