"""The dashboard and the alert rules only query series that fintask or Dramatiq export.

A renamed metric would otherwise leave an empty panel or, worse, an alert that can never fire.
"""

from __future__ import annotations

import inspect
import json
import re

import dramatiq.middleware.prometheus
import pytest
from fastapi.testclient import TestClient
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

import app.metrics
from app.settings import PROJECT_ROOT
from app.web import create_app
from chunking.models import metadata as chunking_metadata

pytest_plugins = ["tests.support.inspection_fixtures"]

OPS = PROJECT_ROOT / "ops"
METRIC = re.compile(r"\b((?:fintask|dramatiq)_[a-z_]+)\b")
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def queried_names() -> set[str]:
    dashboard = json.loads((OPS / "grafana" / "fintask.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    alerts = (OPS / "alerts.yml").read_text()
    return {name for text in [*exprs, alerts] for name in METRIC.findall(text)}


def worker_names() -> set[str]:
    """Sample names of fintask's instruments and of Dramatiq's Prometheus middleware."""
    names = set()
    for instrument in vars(app.metrics).values():
        if isinstance(instrument, MetricWrapperBase):
            for family in instrument.describe():
                names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    source = inspect.getsource(dramatiq.middleware.prometheus)
    for name in re.findall(r'"(dramatiq_[a-z_]+)"', source):
        names |= {name, *(name + suffix for suffix in SUFFIXES["histogram"])}
    return names


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_series_the_dashboard_and_alerts_query_is_exported(inspected_redis, database):
    chunking_metadata.create_all(database)
    exposition = TestClient(create_app()).get("/metrics").text
    families = list(text_string_to_metric_families(exposition))
    web_names = {f.name for f in families} | {s.name for f in families for s in f.samples}

    unknown = queried_names() - worker_names() - web_names

    assert not unknown, f"ops/ queries series nobody exports: {sorted(unknown)}"


def test_the_dashboard_covers_what_operators_ask_for():
    dashboard = json.loads((OPS / "grafana" / "fintask.json").read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    used = queried_names()

    assert {
        "Throughput by queue",
        "Failures by actor and exception",
        "Queue depth",
        "Oldest ready message age",
        "Run progress",
        "Job states",
    } <= titles
    assert {
        "fintask_message_wait_seconds_bucket",
        "dramatiq_message_duration_milliseconds_bucket",
        "fintask_consumers_alive",
    } <= used
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
