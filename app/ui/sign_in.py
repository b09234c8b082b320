"""Sign-in attempts limited per name and per client address, and every failure logged.

Five wrong passwords for one name within a minute, or twenty from one address, and the next attempt is refused
without checking the password (HTTP 429, saying how long to wait) until the oldest failure is a minute old. The
counts live in the server process: replicas each count their own. Gradio hands the `auth` callable only the name
and password, so `ClientAddress` (ASGI middleware) notes each request's client address in a context variable.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

PER_NAME = 5  # wrong passwords for one name in WINDOW_S; the next attempt is refused unchecked
PER_ADDRESS = 20  # wrong passwords from one client address in WINDOW_S (many names tried from one place)
WINDOW_S = 60.0
SWEEP_AT = 10_000  # tracked names and addresses before expired ones are dropped (bounded memory under a flood)

client_address: contextvars.ContextVar[str] = contextvars.ContextVar("client_address", default="unknown")


class ClientAddress:
    """Sets `client_address` for the request it passes on (the peer's address as uvicorn reports it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("client"):
            client_address.set(scope["client"][0])
        await self.app(scope, receive, send)


class SignInLimiter:
    def __init__(self, *, per_name: int = PER_NAME, per_address: int = PER_ADDRESS, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.limits = {"name": per_name, "address": per_address}
        self.window_s = window_s
        self.clock = clock
        self.failures: dict[tuple[str, str], deque[float]] = {}
        self.lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self.failures.get(key, deque())
        while times and now - times[0] >= self.window_s:
            times.popleft()
        return times

    def refusal(self, name: str, address: str) -> str | None:
        """Why this attempt is refused unchecked, or None when it may be checked."""
        now = self.clock()
        with self.lock:
            for kind, value in (("name", name), ("address", address)):
                times = self._recent((kind, value), now)
                if len(times) >= self.limits[kind]:
                    wait = math.ceil(self.window_s - (now - times[0]))
                    whom = f"for {name!r}" if kind == "name" else "from your address"
                    log.warning("sign-in refused unchecked for %r from %s: too many failures %s", name, address, whom)
                    return f"Too many wrong passwords {whom}: wait {wait} s, then try again."
        return None

    def failed(self, name: str, address: str) -> None:
        log.warning("sign-in failed for %r from %s", name, address)
        now = self.clock()
        with self.lock:
            for key in (("name", name), ("address", address)):
                self.failures.setdefault(key, deque()).append(now)
            if len(self.failures) > SWEEP_AT:
                self.failures = {k: t for k, t in self.failures.items() if self._recent(k, now)}

    def succeeded(self, name: str) -> None:
        with self.lock:
            self.failures.pop(("name", name), None)


class ShowRefusal:
    """Adds SHOW_REFUSAL to the page at `path` (the UI's index, which is also its sign-in page: Gradio's `head`
    setting does not reach the sign-in page). Buffers only that one small HTML response."""

    def __init__(self, app: ASGIApp, path: str = "/") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        start: dict = {}
        body: list[bytes] = []

        async def collect(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            html = b"".join(body)
            kind = dict((k.lower(), v) for k, v in headers)
            if kind.get(b"content-type", b"").startswith(b"text/html") and b"content-encoding" not in kind:
                html = html.replace(b"</head>", SHOW_REFUSAL.encode() + b"</head>", 1)
            headers.append((b"content-length", str(len(html)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": html})

        await self.app(scope, receive, collect)


# The sign-in form shows only "Incorrect credentials" (400) and reloads on success: a refusal (429) would leave it
# silent, so this shows the refusal's message above the form.
SHOW_REFUSAL = """<script>
(() => {
  const fetch0 = window.fetch;
  window.fetch = async (...args) => {
    const response = await fetch0(...args);
    const url = String(args[0] && args[0].url || args[0]);
    if (response.status === 429 && url.endsWith('/login')) {
      const detail = (await response.clone().json().catch(() => ({}))).detail || 'Too many sign-in attempts.';
      let box = document.getElementById('sign-in-refused');
      if (!box) {
        box = document.createElement('p');
        box.id = 'sign-in-refused';
        box.style.cssText = 'position:fixed;top:1em;left:0;right:0;color:#b91c1c;text-align:center;font-weight:600';
        document.body.appendChild(box);
      }
      box.textContent = detail;
    }
    return response;
  };
})();
</script>"""
