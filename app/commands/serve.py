"""`apprentice serve`: run the web app (chat UI at /, OpenAI-compatible API at /v1) on the configured host and port."""

from __future__ import annotations

import argparse
import gc
import logging

from app.services.first_run import ensure_first_admin
from app.settings import Settings

SHUTDOWN_GRACE_S = 4


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser("serve", help="run the web app (chat UI and API)", parents=[common])
    serve.add_argument("--host", help="bind address (APPRENTICE_HOST; 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (APPRENTICE_PORT; 7860)")
    serve.add_argument("--engine", choices=["transformers", "vllm"], help="APPRENTICE_ENGINE; transformers")
    serve.add_argument("--device", help="embedded engine device: auto, cpu, cuda (APPRENTICE_DEVICE; auto)")
    serve.add_argument("--vllm-url", help="vLLM server(s) for --engine vllm, comma-separated (APPRENTICE_VLLM_URL)")
    serve.add_argument("--threads", type=int, help="CPU threads for generation (APPRENTICE_THREADS; cores - 1)")
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    import torch
    import uvicorn

    from app.main import create_app  # the web stack and the model: only `serve` needs them

    flags = {"engine": args.engine, "device": args.device, "vllm_url": args.vllm_url, "threads": args.threads}
    settings = settings.model_copy(update={k: v for k, v in flags.items() if v is not None})
    torch.set_num_threads(settings.generation_threads())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    # The model, libraries and UI are built and live as long as the server: keep the cyclic garbage collector
    # from walking them again, or a full collection stalls every stream for about a second.
    gc.collect()
    gc.freeze()
    base = f"http://{settings.host}:{settings.port}"
    print(f"Apprentice serving {settings.model} ({settings.engine}) on {base} (API: {base}/v1)", flush=True)
    first_admin = ensure_first_admin(app.state.apprentice.db, password=settings.admin_password.get_secret_value())
    if first_admin:
        print(first_admin, flush=True)
    # SIGTERM: open connections get SHUTDOWN_GRACE_S to finish, then the engine stops; the process exits well
    # within 10 s even with replies streaming.
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S
    )
    return 0
