"""The web app: `create_app(settings)` builds FastAPI with the Gradio chat page mounted at `/`.

Nothing is built at import. Run it with `apprentice serve`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr
from fastapi import FastAPI

from app.services import model_folder, open_database
from app.settings import Settings
from learner.model_files import load_model


def create_app(settings: Settings) -> FastAPI:
    open_database(settings)
    model, tokenizer = load_model(model_folder(settings))
    lock = threading.Lock()

    def reply(message: str, history: list[dict[str, Any]]) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        messages = [{"role": m["role"], "content": m["content"]} for m in history] + [
            {"role": "user", "content": message}
        ]
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        with lock:
            thread = threading.Thread(
                target=model.generate, kwargs={**inputs, "max_new_tokens": 256, "streamer": streamer}
            )
            thread.start()
            text = ""
            for piece in streamer:
                text += piece
                yield text
            thread.join()

    api = FastAPI(title="Apprentice")

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    demo = gr.ChatInterface(reply, title="Apprentice")
    return gr.mount_gradio_app(api, demo, path="/")
