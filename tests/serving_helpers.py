"""Helpers for the serving tests: our real server on a free port (uvicorn in a thread), users with API keys, and
random LoRA adapters for the tiny model saved the way peft saves them."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.main import create_app
from app.settings import Settings
from app.state import AppState
from storage import users
from storage.errors import Conflict


@dataclass
class Running:
    url: str
    state: AppState
    keys: dict[str, str]  # user name -> API key

    def headers(self, user: str = "bob") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[user]}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(settings: Settings, *, ui: bool = False) -> Iterator[Running]:
    """create_app(settings) (API only, unless `ui`) served over real HTTP, with an admin `ann` and users `bob` and
    `eve`."""
    import uvicorn

    app = create_app(settings, ui=ui)
    state: AppState = app.state.apprentice
    keys = {}
    for name, role in (("ann", "admin"), ("bob", "user"), ("eve", "user")):
        with contextlib.suppress(Conflict):  # a restarted server on the same data directory
            users.create_user(state.db, name=name, role=role, password="password-123")
        keys[name] = users.create_api_key(state.db, name=name)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield Running(f"http://127.0.0.1:{server.config.port}", state, keys)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def make_adapter(model_dir: str, out: Path, seed: int) -> str:
    """A LoRA adapter with random (non-zero) weights on every linear layer, written by peft's save_pretrained."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)  # the "default" adapter lands in `out` itself
    return str(out)


def sse_events(lines: Any) -> list[dict[str, Any] | str]:
    """The `data:` payloads of an SSE stream, JSON-decoded, with the final "[DONE]" kept as a string."""
    import json

    events: list[dict[str, Any] | str] = []
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """The tiny model gains nothing from threads, and on a busy 2-core machine OpenMP threads waiting on each
    other make every small op slow: run the serving tests single-threaded, then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
