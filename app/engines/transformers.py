"""The embedded engine: one base model in memory (CPU, or CUDA when present), one peft LoRA adapter per version,
every request served by one batching generation loop (app/engines/generation.py).

    engine = TransformersEngine.from_folder(folder, device="auto", limits=Limits())
    await engine.activate("v3", "/data/adapters/v3")       # hot swap; replies already streaming keep their version
    async for delta in engine.chat(messages, Sampling(temperature=0)):
        print(delta.text, end="")

Version bookkeeping is app/engines/versions.VersionTable's (loaded, active, in flight, retiring); this engine attaches
a version's adapter to the model and detaches it. Tested in tests/test_engine.py and tests/test_swap.py.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from app.engines.adapters import AdapterSet, read_adapter
from app.engines.base import (
    BASE_VERSION,
    Delta,
    Engine,
    EngineError,
    Limits,
    Sampling,
    TokenLogprob,
    UserShare,
    admitted,
)
from app.engines.generation import BASE_ADAPTER, GenerationLoop, Job
from app.engines.sampling import Detokenizer
from app.engines.versions import VersionTable
from learner.chat import encode_chat
from learner.model_files import load_model

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} asked for, but this machine has no CUDA GPU")
    return device


class TransformersEngine(Engine):
    def __init__(
        self, model: Any, tokenizer: Any, *, limits: Limits | None = None, prefill_chunk: int | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.limits = limits or Limits()
        if prefill_chunk is None:
            # Prompt tokens computed between two decode steps. On a CPU 64 tokens cost about one or two steps of a
            # batch, so a burst of new requests never freezes the streams already running; a GPU takes far more.
            on_cpu = next(model.parameters()).device.type == "cpu"
            prefill_chunk = 64 if on_cpu else 512
        self._gen = GenerationLoop(
            model,
            tokenizer,
            max_batch=self.limits.max_concurrent,
            max_waiting=self.limits.max_queued,
            prefill_chunk=prefill_chunk,
        )
        self._adapters = AdapterSet(model, self._gen)
        self._share = UserShare(self.limits.max_per_user)
        self._versions = VersionTable(base_handle=BASE_ADAPTER)  # handles: peft adapter keys
        self._admin = threading.RLock()  # one load / unload / activate at a time
        self._keys = itertools.count(1)

    @classmethod
    def from_folder(cls, folder: str, *, device: str = "auto", limits: Limits | None = None) -> TransformersEngine:
        import torch

        device = resolve_device(device)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model, tokenizer = load_model(folder, device=device, dtype=dtype)
        return cls(model, tokenizer, limits=limits)

    @property
    def stats(self) -> dict[str, int]:
        """Counters of the generation loop: steps, tokens, the most rows one step has decoded."""
        return dict(self._gen.stats)

    @property
    def active(self) -> str:
        return self._versions.active

    def loaded(self) -> list[str]:
        return self._versions.loaded()

    def retiring(self) -> list[str]:
        """Versions replaced or unloaded that still finish replies; each goes when its last reply ends."""
        return self._versions.retiring()

    # ---- versions

    async def load(self, name: str, adapter_path: str | None) -> None:
        await asyncio.to_thread(self._load, name, adapter_path)

    async def unload(self, name: str) -> None:
        await asyncio.to_thread(self._unload, name)

    async def activate(self, name: str, adapter_path: str | None) -> None:
        await asyncio.to_thread(self._activate, name, adapter_path)

    def _load(self, name: str, adapter_path: str | None) -> None:
        if not name or len(name) > 120 or name != name.strip():
            raise EngineError(f"a version name needs 1 to 120 characters without surrounding spaces, not {name!r}")
        with self._admin:
            path = str(Path(adapter_path).resolve()) if adapter_path else None
            if self._versions.reuse(name, path):
                return
            if path is None:
                raise EngineError(f"version {name!r} needs an adapter folder (only {BASE_VERSION} is the base model)")
            config, weights = read_adapter(path, self._gen.device)
            key = f"adapter{next(self._keys)}"  # peft keys cannot hold every character a version name may
            prepared = self._adapters.prepare(config, weights)  # off the generation thread: no pause for streams
            if prepared is not None:
                self._gen.call(lambda: self._adapters.attach(key, prepared)).result()
            else:
                self._gen.call(lambda: self._adapters.inject(key, config, weights)).result()
            self._versions.add(name, key, path)
            log.info("loaded version %s from %s", name, path)

    def _unload(self, name: str) -> None:
        with self._admin:
            self._versions.check_unload(name)
            self._retire(name)

    def _activate(self, name: str, adapter_path: str | None) -> None:
        with self._admin:
            self._load(name, adapter_path)
            old = self._versions.set_active(name)
            if old != name:
                log.info("activated version %s (was %s)", name, old)
                self._retire(old)

    def _retire(self, name: str) -> None:
        """Detach now if no reply streams from `name`, else when its last reply ends (see `_release`)."""
        key = self._versions.retire(name)
        if key is not None:
            self._gen.call(lambda: self._adapters.delete(key)).result()
            log.info("unloaded version %s", name)

    def _release(self, name: str) -> None:
        key = self._versions.release(name)
        if key is None:
            return
        try:
            future = self._gen.call(lambda: self._adapters.delete(key))
        except RuntimeError:  # the engine is closing
            return
        future.add_done_callback(lambda f: f.exception() and log.error("unloading %s failed: %s", name, f.exception()))
        log.info("unloading retired version %s", name)

    # ---- generation

    def chat(
        self, messages: list[dict[str, str]], sampling: Sampling, *, version: str | None = None, user: str | None = None
    ) -> AsyncIterator[Delta]:
        chars = sum(len(m.get("content") or "") for m in messages)
        return self._stream(lambda: encode_chat(self.tokenizer, messages), chars, sampling, version, user)

    def complete(
        self, prompt: str | list[int], sampling: Sampling, *, version: str | None = None, user: str | None = None
    ) -> AsyncIterator[Delta]:
        encode = lambda: self.encode(prompt)  # noqa: E731
        return self._stream(encode, len(prompt), sampling, version, user, allow_zero_tokens=True)

    def _stream(
        self,
        encode: Any,
        chars: int,
        sampling: Sampling,
        version: str | None,
        user: str | None,
        *,
        allow_zero_tokens: bool = False,
    ) -> AsyncIterator[Delta]:
        generate = lambda ids: self._generate(ids, sampling, version, user)  # noqa: E731
        return admitted(self, self._share, encode, chars, sampling, user, generate, allow_zero_tokens=allow_zero_tokens)

    async def _generate(
        self, ids: list[int], sampling: Sampling, version: str | None, user: str | None
    ) -> AsyncIterator[Delta]:
        context = getattr(self._gen.model.config, "max_position_embeddings", None)
        if context and len(ids) + sampling.max_tokens > context:
            raise EngineError(
                f"the input ({len(ids)} tokens) plus max_tokens ({sampling.max_tokens}) is over the model's context "
                f"of {context} tokens; ask for fewer tokens or shorten the conversation"
            )
        name, key = self._versions.acquire(version)
        released, job = False, None
        try:
            if sampling.max_tokens == 0:  # echo-only completions: nothing to generate
                released = self._release_once(name, released)
                yield Delta(text="", version=name, finish_reason="length", prompt_tokens=len(ids))
                return
            queue: asyncio.Queue[Delta | BaseException] = asyncio.Queue()
            job = Job(
                prompt=ids,
                adapter=key,
                version=name,
                sampling=sampling,
                deadline=time.monotonic() + self.limits.request_timeout,
                emit=_emitter(asyncio.get_running_loop(), queue),
                owner=user,
            )
            self._gen.submit(job)
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason is not None:
                    released = self._release_once(name, released)  # before the last yield: a caller may stop there
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if job is not None:
                self._gen.cancel(job)  # frees the slot at the next step; harmless once finished
            self._release_once(name, released)

    def _release_once(self, name: str, released: bool) -> bool:
        if not released:
            self._release(name)
        return True

    async def prompt_logprobs(
        self, prompt: str | list[int], *, version: str | None = None, top: int = 0
    ) -> list[TokenLogprob]:
        ids = await self.prompt_ids(lambda: self.encode(prompt), len(prompt), self.limits)
        name, key = self._versions.acquire(version)
        try:
            rows = await asyncio.wrap_future(self._gen.call(lambda: self._gen.score(ids, key, top)))
        finally:
            self._release(name)
        detok = Detokenizer(self.tokenizer, skip_special_tokens=False)
        out, offset = [], 0
        for token_id, (logprob, alternatives) in zip(ids, rows, strict=True):
            top_texts: dict[str, float] = {}
            for alt, value in alternatives.items():
                top_texts.setdefault(self._token_text(alt), value)  # two ids may print alike: keep the likelier
            out.append(TokenLogprob(self._token_text(token_id), logprob, offset, top_texts, token_id))
            offset += len(detok.add(token_id))
        return out

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    async def close(self) -> None:
        await asyncio.to_thread(self._gen.close)


def _emitter(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> Any:
    def emit(item: Delta | BaseException) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the caller's event loop is closed: nobody is listening any more
            pass

    return emit
