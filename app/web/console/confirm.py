"""Every console action is confirmed, then done once, then reported on the page it came from.

A form posts to its action without ``confirmed``: the answer is a page saying what will
happen, whose button posts the same fields again with ``confirmed=yes``. The action then runs
and the browser is sent back (303, so a reload does not repeat it) to a page showing its
result line. A target that is not there or a value refused is a result line too, not an error
page: the operator sees what happened where they were.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from app.redis_client import get_redis
from app.web.console.access import safe_next
from app.web.console.render import render
from app.web.console.sessions import ConsoleSession, set_flash

#: Form fields the confirmation page does not post again as they came.
_OWN_FIELDS = {"csrf_token", "confirmed"}


async def confirm_or_act(
    request: Request,
    user: ConsoleSession,
    *,
    title: str,
    consequence: str,
    act: Callable[[], str],
) -> Response:
    """Ask ``consequence`` ("Cancel message 1f3…?"), or once confirmed run ``act``, whose text
    is the result line, and go back to the form's ``back`` page."""
    form = await request.form()
    back = safe_next(form.get("back"))
    if form.get("confirmed") != "yes":
        fields = [
            (name, value)
            for name, value in form.multi_items()
            if name not in _OWN_FIELDS and isinstance(value, str)
        ]
        return render(
            request,
            user,
            "confirm.html",
            title=title,
            consequence=consequence,
            fields=fields,
            action=request.url.path,
            back=back,
        )
    try:
        text, ok = act(), True
    except (LookupError, ValueError) as error:  # an UnknownTarget, a refused value
        text, ok = str(error), False
    set_flash(get_redis(), user.session_id, text, ok=ok)
    return RedirectResponse(back, status_code=303)
