"""The web process's access log, without a secret a client put in a query string.

fintask reads API tokens from the ``Authorization`` header only (``app.web.auth``), but a
client may still send one as ``?access_token=`` or ``?token=``, as OAuth's bearer-in-query
does; uvicorn logs each request's path with its query string. Each access record's path goes
through ``app.settings.hide_credentials`` first, so such a value is logged as ``***``.
"""

from __future__ import annotations

import logging

from app.settings import hide_credentials

#: The logger uvicorn writes one record per request to (gunicorn's access log, under its worker).
ACCESS_LOGGER = "uvicorn.access"


class HideQuerySecrets(logging.Filter):
    """Rewrites the path of each uvicorn access record: ``(client, method, path, version,
    status)``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args
            record.args = (client, method, hide_credentials(str(path)), version, status)
        return True


def hide_query_secrets() -> None:
    """Install the filter on the access logger, once however many apps a process creates."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, HideQuerySecrets) for f in logger.filters):
        logger.addFilter(HideQuerySecrets())
