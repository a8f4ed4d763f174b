"""Error reporting through sentry-sdk's own ``DramatiqIntegration``.

``init_sentry`` must run before the broker is built: the integration patches
``Broker.__init__`` to put its middleware first in the stack.

What reaches Sentry: one event per failed run of a message, carrying the actor name, the
message id and the queue, never the arguments. A message with ``max_retries=0`` that fails
gives exactly one event; one that fails on every one of N retries gives N + 1, which Sentry
groups into one issue (each attempt may fail differently, so none is dropped here).
``dramatiq.Retry`` and an actor's ``throws`` are not reported.

Before an event leaves the process (``scrub_event``, sentry-sdk's ``before_send``, which gets
the event serialized to JSON types), the message's arguments are dropped, and then every text
in it is redacted (``app.redaction``): the exception values, and the source lines of their
frames, the breadcrumbs (the log lines before the failure: their messages and data), extra,
contexts, tags, the log entry and the message. Breadcrumbs leave only inside an event, so no
``before_breadcrumb`` is needed. Transactions and Sentry's logs are not enabled here; enabling
them would need ``before_send_transaction`` and ``before_send_log`` too.
"""

from __future__ import annotations

from typing import Any, cast

import sentry_sdk
from sentry_sdk.integrations.dramatiq import DramatiqIntegration
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.transport import Transport
from sentry_sdk.types import Event, Hint

from app.redaction import redact_data
from app.settings import Settings

FILTERED = "[Filtered]"

#: Message fields that identify a failure without carrying a user's data.
SAFE_MESSAGE_FIELDS = frozenset({"queue_name", "actor_name", "message_id", "message_timestamp"})


def init_sentry(settings: Settings, *, transport: type[Transport] | None = None) -> bool:
    """Start reporting to ``SENTRY_DSN``; return False (and do nothing) when it is unset."""
    if settings.sentry_dsn is None:
        return False
    # Dramatiq logs the same exception from its worker thread; left alone, the logging
    # integration's event would be deduplicated against, and may replace, the richer one.
    ignore_logger("dramatiq.worker.WorkerThread")
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment,
        integrations=[DramatiqIntegration()],
        send_default_pii=False,
        include_local_variables=False,
        before_send=scrub_event,
        transport=transport,
    )
    return True


def scrub_event(event: Event, _hint: Hint) -> Event:
    """Keep which actor and message failed; drop the arguments, which may be a user's data,
    and redact every text left (an exception's value quotes what it failed on)."""
    data = event.get("contexts", {}).get("dramatiq", {}).get("data")
    if isinstance(data, dict):
        for key in data:
            if key not in SAFE_MESSAGE_FIELDS:
                data[key] = FILTERED
    event.pop("user", None)
    event.pop("request", None)
    redacted: dict[str, Any] = redact_data(dict(event))
    trace = event.get("contexts", {}).get("trace")
    if trace is not None:
        # Ids Sentry links the event by, never a user's text: a span id of 16 decimal digits
        # could pass for a card number.
        redacted["contexts"]["trace"] = trace
    return cast(Event, redacted)
