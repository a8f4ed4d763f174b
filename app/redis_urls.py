"""Sentinel URLs: which sentinels to ask for which master, read from ``REDIS_URL``.

redis-py reads ``redis://``, ``rediss://`` and ``unix://`` URLs itself, but has no URL for
Sentinel. fintask's is::

    redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB][?OPTIONS]
    rediss+sentinel://...   the same over TLS, to the sentinels and to the master

``USER`` and ``PASSWORD`` are the master's (and its replicas'): an ACL user, or only a
password for ``requirepass``. The sentinels are asked without credentials, unless
``sentinel_username`` and ``sentinel_password`` are given in the query (Sentinel's own
``requirepass`` or ACL user, which often differ from the data nodes'). Every other parameter
is one redis-py reads from a ``redis://`` URL (``ssl_ca_certs``, ``socket_timeout``...), and
applies to the master; with TLS the ``ssl_*`` ones apply to the sentinels too. A port left out
is Sentinel's, 26379.

Pure parsing, so that ``app.settings`` refuses a malformed URL at start and
``app.redis_client`` builds its pools from the same reading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

from redis.connection import URL_QUERY_ARGUMENT_PARSERS

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")

#: Sentinel's default port, for an address given without one.
SENTINEL_PORT = 26379

#: The query parameters that are the sentinels' credentials, not the master's.
SENTINEL_CREDENTIALS = ("sentinel_username", "sentinel_password")


class SentinelURLError(ValueError):
    """A Sentinel URL is malformed; the message says which part, and how it should look."""


@dataclass(frozen=True)
class SentinelURL:
    """What a Sentinel URL says: where the sentinels are, which master, how to connect to it."""

    sentinels: list[tuple[str, int]]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False
    #: redis-py connection options of the master, from the query (``ssl_ca_certs``...).
    options: dict[str, Any] = field(default_factory=dict)


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names sentinels rather than one Redis."""
    return url.partition("://")[0] in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelURL:
    """Read ``url``; a ``SentinelURLError`` naming what is wrong if it is malformed."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in SENTINEL_SCHEMES:
        raise SentinelURLError("the scheme must be redis+sentinel:// or rediss+sentinel://")
    rest, _, query = rest.partition("?")
    location, _, path = rest.partition("/")
    credentials, at, hosts = location.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    options, sentinel_credentials = _options(query)
    master, _, database = path.strip("/").partition("/")
    if not master:
        raise SentinelURLError(
            "the URL names no master (redis+sentinel://HOST:PORT,HOST:PORT/MASTER/DB)"
        )
    if database and not database.isdigit():
        raise SentinelURLError("the database must be a whole number (.../MASTER/DB)")
    return SentinelURL(
        sentinels=[_address(address) for address in hosts.split(",")],
        master=unquote(master),
        db=int(database or options.pop("db", 0)),
        username=username,
        password=password,
        tls=scheme == "rediss+sentinel",
        options=options,
        **sentinel_credentials,
    )


def _address(address: str) -> tuple[str, int]:
    host, colon, port = address.strip().rpartition(":")
    if not colon:
        host, port = port, str(SENTINEL_PORT)
    if not host:
        raise SentinelURLError(
            "a sentinel's address names no host (redis+sentinel://HOST:PORT,HOST:PORT/MASTER)"
        )
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SentinelURLError(
            f"the port of sentinel {host!r} must be a whole number from 1 to 65535"
        )
    return host.strip("[]"), int(port)


def _options(query: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The master's connection options and the sentinels' credentials, from the query."""
    options: dict[str, Any] = {}
    credentials: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in SENTINEL_CREDENTIALS:
            credentials[name] = value
            continue
        parser = cast("Callable[[str], Any] | None", URL_QUERY_ARGUMENT_PARSERS.get(name))
        try:
            options[name] = value if parser is None else parser(value)
        except (TypeError, ValueError):
            raise SentinelURLError(f"the parameter {name} has an invalid value") from None
    return options, credentials
