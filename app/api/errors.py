"""Every error the API answers, in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`, made here only.

Domain errors (storage.errors.ApprenticeError and its subclasses, EngineError, EngineBusy) carry their HTTP status;
request validation errors become 400 with the offending field named; HTTP errors under /v1 keep their status.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from storage.errors import ApprenticeError

log = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    503: "server_busy_error",
}


class Unauthorized(ApprenticeError):
    status = 401


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict:
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code or kind}}


def error_response(status: int, message: str, *, param: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(status, message, param=param), status_code=status, headers=headers)


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApprenticeError)
    async def domain_error(_request: Request, exc: ApprenticeError) -> JSONResponse:
        return error_response(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if not problems:
            return error_response(400, "the request body is not valid")
        first = problems[0]
        if first.get("type") == "json_invalid" or (
            tuple(first.get("loc", ())) == ("body",) and first.get("type") != "value_error"
        ):
            return error_response(400, "the request body must be a JSON object")
        message = "; ".join(f"{_field(p['loc'])}: {p['msg']}" for p in problems[:5])
        return error_response(400, message, param=_field(first["loc"]))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if request.url.path.startswith("/v1"):
            return error_response(exc.status_code, str(exc.detail))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return error_response(500, "internal server error; the server log has the details")
