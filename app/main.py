"""The web app: `create_app(settings)` opens the database, loads the engine, and builds FastAPI with the OpenAI
API under /v1 and the Gradio UI at `/`.

Nothing is built at import. Run it with `apprentice serve`. At start the engine is brought to the database's active
version (a restarted server serves what was live); while it runs, app.services.versions follows the database, so
`apprentice activate NAME` from any shell hot-swaps it within `version_poll_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import admin
from app.api.errors import install_error_handlers
from app.api.openai import VERSION_HEADER, router
from app.api.openapi import install_openapi
from app.api.responses import Health
from app.engines.base import Engine, Limits
from app.services import model_folder, open_database
from app.services.arrival_checks import check_arrivals
from app.services.learning import after_scheduled_round, gate_ungated, start_learning
from app.services.versions import follow_database, sync_engine
from app.settings import Settings
from app.state import AppState
from learner.model_files import load_tokenizer
from storage.errors import ApprenticeError

log = logging.getLogger(__name__)


def load_engine(settings: Settings) -> Engine:
    """The inference engine the settings ask for: the base model loaded here, or a client of vLLM servers."""
    limits = Limits.from_settings(settings)
    if settings.engine == "vllm":
        from app.engines.vllm import VllmEngine  # each engine's libraries load only when it is chosen

        folder = model_folder(settings)
        return VllmEngine(
            settings.vllm_url,
            api_key=settings.vllm_api_key,
            base_model=settings.vllm_base_model,
            tokenizer=load_tokenizer(folder),
            limits=limits,
        )
    from app.engines.transformers import TransformersEngine  # torch and transformers

    return TransformersEngine.from_folder(model_folder(settings), device=settings.device, limits=limits)


def create_app(settings: Settings, *, ui: bool = True, engine: Engine | None = None) -> FastAPI:
    """The whole server. `ui=False` leaves the Gradio UI out (API-only tests); `engine` reuses a loaded one."""
    db = open_database(settings)
    state = AppState(settings=settings, db=db, engine=engine or load_engine(settings))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            await sync_engine(state)
        except ApprenticeError as e:
            raise ApprenticeError(
                f"cannot serve the active version: {e}; roll back with `apprentice activate <earlier version>`"
            ) from e
        watcher = asyncio.create_task(follow_database(state, settings.version_poll_seconds))
        scheduler = start_learning(settings, on_result=after_scheduled_round(state, asyncio.get_running_loop()))
        # a learning server gates its rounds: also one a restart left between its round and its gate
        gating = settings.learn_in_server and not settings.learn_activate
        recovery = asyncio.create_task(gate_ungated(state)) if gating else None
        arrivals = asyncio.create_task(check_arrivals(state)) if settings.teacher_check_on_arrival else None
        try:
            yield
        finally:
            watcher.cancel()
            if arrivals is not None:
                arrivals.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await arrivals  # its lease is released before the engine closes
            if recovery is not None:
                recovery.cancel()
            if scheduler is not None:
                scheduler.shutdown(wait=False)
            if engine is None:  # ours to close
                await state.engine.close()

    api = FastAPI(title="Apprentice", lifespan=lifespan)
    api.state.apprentice = state
    install_error_handlers(api)
    api.add_middleware(VersionHeader, state=state)
    api.include_router(router)
    api.include_router(admin.router)

    @api.get("/healthz", response_model=Health)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": state.engine.active}

    install_openapi(api)

    if ui:
        from app.ui import mount_ui  # gradio: only with the UI

        return mount_ui(api, state)
    return api


class VersionHeader:
    """Adds `X-Model-Version: <active version>` to /v1 responses that do not name a version themselves (a plain
    ASGI middleware: it leaves streaming and client disconnects alone)."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        name = VERSION_HEADER.lower().encode()

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == name for k, _ in headers):
                    headers.append((name, self.state.engine.active.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_version)
