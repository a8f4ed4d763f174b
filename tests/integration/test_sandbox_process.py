"""The real ``python -m sandbox`` process, driven over HTTP by fintask's provider client."""

from __future__ import annotations

import sys

import httpx
import pytest

from app.local.ports import free_port, wait_for_port
from app.provider import ProviderClient, ProviderRateLimited
from sandbox.data import expected_accounts, expected_transactions
from tests.support.processes import fintask_env, running, wait_until

pytestmark = pytest.mark.integration


def test_the_client_downloads_refreshes_and_is_rate_limited_by_the_sandbox_process(tmp_path):
    # Given the sandbox running as its own process, with refreshes that take 0.3 s
    port = free_port()
    command = [sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(port)]
    env = fintask_env(SANDBOX_REFRESH_SECONDS="0.3")
    base_url = f"http://127.0.0.1:{port}"

    with running(command, env, tmp_path / "sandbox.log") as process:
        wait_for_port(port, timeout_s=120)
        assert process.poll() is None, (tmp_path / "sandbox.log").read_text()

        with ProviderClient(base_url=base_url, timeout_s=10) as client:
            # When the client lists the accounts, downloads one and refreshes it
            accounts = client.list_accounts(17)
            downloaded = list(client.iter_transactions("acc-17-0", page_size=25))
            refresh = client.start_refresh("acc-17-0")
            wait_until(lambda: client.get_refresh(refresh.refresh_id).done, what="refresh done")

        # And a second client, allowed one request per second, sends two at once
        limited = {"X-Sandbox-Rate-Limit": "1", "X-Sandbox-Client-Id": "limited"}
        with ProviderClient(base_url=base_url, timeout_s=10, headers=limited) as client:
            client.get_account("acc-17-0")
            with pytest.raises(ProviderRateLimited) as refused:
                client.get_account("acc-17-0")

        stats = httpx.get(f"{base_url}/_sandbox/stats", timeout=10).json()

    # Then every transaction came over real HTTP, the refresh finished, and the 429 was counted
    assert [a.external_id for a in accounts] == [a.external_id for a in expected_accounts(17)]
    assert [t.id for t in downloaded] == [t.id for t in expected_transactions("acc-17-0")]
    assert refresh.status == "in_progress"
    assert refused.value.retry_after_ms == 1_000
    assert stats["by_status"]["429"] == 1
    assert stats["endpoints"]["POST /accounts/{external_id}/refresh"]["requests"] == 1
