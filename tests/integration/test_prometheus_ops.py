"""ops/: promtool accepts the scrape config and the rules, and the rules' own unit tests pass."""

from __future__ import annotations

import shutil
import subprocess

from app.settings import PROJECT_ROOT

OPS = PROJECT_ROOT / "ops"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus"
    return subprocess.run([binary, *args], cwd=OPS, capture_output=True, text=True, timeout=60)


def test_the_scrape_config_and_the_rules_it_loads_are_valid():
    result = promtool("check", "config", "prometheus.yml")

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_are_valid():
    result = promtool("check", "rules", "alerts.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


def test_the_alerts_fire_in_the_situations_their_unit_tests_describe():
    result = promtool("test", "rules", "alerts.test.yml")

    assert result.returncode == 0, result.stdout + result.stderr
