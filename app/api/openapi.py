"""The OpenAPI document as the API behaves, and 405 for a method a path does not take.

FastAPI declares a 422 on every route with parameters; this server answers bad input with 400 (app/api/errors.py),
so the document drops the 422s and their schemas (each route declares its 400 through app/api/responses.py), and
errors are JSON even where success is plain text. The
Gradio UI is mounted at "/" and would answer an unknown method on an API path with 404: `MethodNotAllowed` answers
405 with an `Allow` header first. tests/test_fuzz.py holds the server to the document.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response

VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def install_openapi(app: FastAPI) -> None:
    """Serve the document without the 422s FastAPI adds; answer 405 on API paths for methods they do not take."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
            for item in doc.get("paths", {}).values():
                for operation in item.values():
                    responses = operation.get("responses", {})
                    responses.pop("422", None)
                    for status, response in responses.items():
                        _errors_are_json(status, response)
            schemas = doc.get("components", {}).get("schemas", {})
            for name in VALIDATION_SCHEMAS:
                schemas.pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(MethodNotAllowed, document=openapi)


def _errors_are_json(status: str, response: dict[str, Any]) -> None:
    """A route whose success is plain text (adapter load/unload) still answers its errors in JSON."""
    content = response.get("content", {})
    if not status.startswith("2") and content and "application/json" not in content:
        response["content"] = {"application/json": next(iter(content.values()))}


class MethodNotAllowed:
    """405 (OpenAI's error shape, `Allow` listing the methods) for a request to a path of the document with a
    method the document does not give it; everything else passes through."""

    def __init__(self, app: ASGIApp, document: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.document = document
        self.paths: list[tuple[re.Pattern[str], set[str]]] | None = None

    def _allowed(self, path: str) -> set[str] | None:
        if self.paths is None:  # built at the first request, when every route is in place
            self.paths = []
            for template, item in self.document().get("paths", {}).items():
                pattern = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
                methods = {m.upper() for m in item}
                self.paths.append((re.compile(f"^{pattern}$"), methods | ({"HEAD"} if "GET" in methods else set())))
        found = [methods for pattern, methods in self.paths if pattern.match(path)]
        return set().union(*found) if found else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            allowed = self._allowed(scope["path"])
            if allowed is not None and scope["method"] not in allowed:
                methods = ", ".join(sorted(allowed))
                response = error_response(405, f"{scope['method']} is not allowed here; this path takes {methods}")
                response.headers["Allow"] = methods
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
