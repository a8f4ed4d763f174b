"""Sentinel URLs read as the README documents them, refused in one line when malformed, and
never echoed with their passwords; the shipped ACL file grants each process type what
``app.redis_access`` lists, and nothing an attacker would want."""

from __future__ import annotations

import pytest

from app.redis_access import COMMANDS, CONSUMING
from app.redis_client import redis_pool
from app.redis_urls import SENTINEL_PORT, SentinelURL, parse_sentinel_url
from app.settings import PROJECT_ROOT, SettingsError, hide_credentials, load_settings

PASSWORD = "hunter2"
SENTINEL_PASSWORD = "s3ntinel"

#: ``ops/redis-users.acl``'s users, by the process type each serves.
ACL_USERS = {"fintask-worker": "worker", "fintask-web": "web", "fintask-scheduler": "scheduler"}


def test_a_sentinel_url_names_its_sentinels_master_database_and_both_credentials():
    url = (
        f"rediss+sentinel://fintask-worker:{PASSWORD}@10.0.0.1:26380,10.0.0.2/mymaster/3"
        f"?sentinel_password={SENTINEL_PASSWORD}&ssl_ca_certs=/etc/ca.pem&socket_timeout=5"
    )

    assert parse_sentinel_url(url) == SentinelURL(
        sentinels=[("10.0.0.1", 26380), ("10.0.0.2", SENTINEL_PORT)],
        master="mymaster",
        db=3,
        username="fintask-worker",
        password=PASSWORD,
        sentinel_password=SENTINEL_PASSWORD,
        tls=True,
        options={"ssl_ca_certs": "/etc/ca.pem", "socket_timeout": 5.0},
    )


def test_a_sentinel_url_without_credentials_or_database_uses_none_and_zero():
    parsed = parse_sentinel_url("redis+sentinel://127.0.0.1:26379/mymaster")

    assert (parsed.db, parsed.username, parsed.password, parsed.tls) == (0, None, None, False)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://h:26379", "the URL names no master"),
        ("redis+sentinel://h:26379/mymaster/zero", "the database must be a whole number"),
        ("redis+sentinel://h:99999/mymaster", "the port of sentinel 'h' must be a whole number"),
        ("redis+sentinel://h:1,:2/mymaster", "a sentinel's address names no host"),
        ("redis+sentinel://h:1/m?socket_timeout=soon", "the parameter socket_timeout"),
    ],
)
def test_a_malformed_sentinel_url_stops_at_start_in_one_line_without_its_password(url, reason):
    url = url.replace("://", f"://user:{PASSWORD}@", 1)

    with pytest.raises(SettingsError) as error:
        load_settings({"REDIS_URL": url})

    message = str(error.value)
    assert message.startswith("REDIS_URL='redis+sentinel://***@h:"), message
    assert reason in message
    assert PASSWORD not in message
    assert "\n" not in message


def test_a_sentinel_url_is_shown_without_either_password():
    url = f"redis+sentinel://u:{PASSWORD}@h:1,h:2/m/0?sentinel_password={SENTINEL_PASSWORD}"

    assert hide_credentials(url) == "redis+sentinel://***@h:1,h:2/m/0?sentinel_password=***"


def test_an_unknown_scheme_lists_the_sentinel_ones():
    with pytest.raises(SettingsError, match=r"redis\+sentinel://, rediss://, rediss\+sentinel://"):
        load_settings({"REDIS_URL": "sentinel://h:26379/m"})


def test_the_durable_enqueue_settings_are_off_by_default_and_bounded():
    settings = load_settings({})
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout_ms) == (0, 1_000)

    with pytest.raises(SettingsError, match="REDIS_WAIT_REPLICAS='-1': expected a whole number"):
        load_settings({"REDIS_WAIT_REPLICAS": "-1"})


def test_a_sentinel_pool_asks_for_the_master_with_the_urls_credentials_and_tls():
    url = f"rediss+sentinel://u:{PASSWORD}@h:1/mymaster/2?sentinel_password={SENTINEL_PASSWORD}"

    pool = redis_pool(url, socket_timeout=3)

    assert pool.service_name == "mymaster"  # type: ignore[attr-defined]
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("u", PASSWORD, 2)
    assert kwargs["socket_timeout"] == 3
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    [sentinel] = pool.sentinel_manager.sentinels  # type: ignore[attr-defined]
    assert sentinel.get_connection_kwargs()["password"] == SENTINEL_PASSWORD


def _acl_users() -> dict[str, list[str]]:
    lines = (PROJECT_ROOT / "ops" / "redis-users.acl").read_text().splitlines()
    return {line.split()[1]: line.split()[2:] for line in lines if line.strip()}


def test_the_shipped_acl_file_grants_each_process_type_exactly_its_commands_and_keys():
    users = _acl_users()

    assert set(users) == set(ACL_USERS)
    for user, process_type in ACL_USERS.items():
        rules = users[user]
        granted = {rule[1:] for rule in rules if rule.startswith("+")}
        assert granted == set(COMMANDS[process_type]), user
        assert [rule for rule in rules if rule.startswith("~")] == [
            "~dramatiq",
            "~dramatiq:*",
            "~fintask:*",
        ]
        assert rules.index("-@all") < min(i for i, r in enumerate(rules) if r.startswith("+"))


def test_no_process_type_may_flush_configure_or_list_keys_and_only_workers_pop():
    for process_type, commands in COMMANDS.items():
        assert not {"flushall", "flushdb", "config", "keys", "scan"} & set(commands)
        popping = set(CONSUMING) & set(commands)
        assert popping == (set(CONSUMING) if process_type.startswith("worker") else set())
