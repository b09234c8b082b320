"""`apprentice serve`: run the web app (chat UI and API) on the configured host and port."""

from __future__ import annotations

import argparse

from app.settings import Settings


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser("serve", help="run the web app (chat UI and API)", parents=[common])
    serve.add_argument("--host", help="bind address (APPRENTICE_HOST; 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (APPRENTICE_PORT; 7860)")
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from app.main import create_app

    app = create_app(settings)
    print(f"Apprentice serving {settings.model} on http://{settings.host}:{settings.port}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0
