"""The console's unit tests: its pages on the test's own Redis, tokens and audit rows in SQLite.

SQLite alone: the pages read Redis; what they keep in the database (tokens, the audit trail)
is tested on PostgreSQL as well by tests/unit/test_control_audit_tokens.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fintask.db'}"
