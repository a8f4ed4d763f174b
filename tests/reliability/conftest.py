"""Fault tests: real redis-server and real worker processes, under the Procfile's settings.

They take minutes (a killed worker's messages come back only once its heartbeat is 60 s old),
so they carry the ``reliability`` mark and run apart from the integration tests. The fixtures
(``redis_server``, ``redis_url``, ``client``) are the shared ones of ``tests/conftest.py``.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: kills and faults under production settings (minutes)"
    )
