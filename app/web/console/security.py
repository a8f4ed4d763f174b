"""Headers every answer carries, and the strict ones of the console's pages.

The console's Content-Security-Policy allows scripts, styles, images and forms from this
site only, and no inline script or style at all: text that escaped masking could still not
run. No page may be framed (clickjacking), no type is sniffed, and a Referer leaves for this
site only. Console pages are ``no-store``: a shared machine's back button shows no queue.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: What the console's pages may load: their own files and nothing inline.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_EVERYWHERE = {
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",
}
_CONSOLE = {b"content-security-policy": CONSOLE_CSP.encode()}
_CONSOLE_PAGES = {**_CONSOLE, b"cache-control": b"no-store"}


class SecurityHeaders:
    """ASGI middleware: adds the headers, leaving any an endpoint set itself."""

    def __init__(self, app: ASGIApp, *, console_prefix: str = "/console") -> None:
        self.app = app
        self.console_prefix = console_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope["path"])
        headers = dict(_EVERYWHERE)
        if path.startswith(f"{self.console_prefix}/static/"):
            headers.update(_CONSOLE)  # the console's own files may be cached
        elif path.startswith(self.console_prefix):
            headers.update(_CONSOLE_PAGES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(k, v) for k, v in headers.items() if k not in present]
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)
