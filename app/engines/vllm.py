"""The `vllm` engine: a client of one or more external `vllm serve` started with runtime LoRA updating (README,
"vLLM").

Versions are LoRA adapters loaded into that server by name (`POST /v1/load_lora_adapter {"lora_name",
"lora_path"}`, `/v1/unload_lora_adapter`) and chosen per request with `"model": <version name>`; version v0 is the
base model under the name vLLM serves it (`base_model`). Prompts are sent as token ids built here with
learner.chat.encode_chat, so a `<|im_start|>` typed by a user stays text (vLLM's own chat templating would turn it
into a role marker). Hot swap works as in the embedded engine: load beside, flip, unload the old version once the
replies streaming from it have ended. The adapter folders must be readable by the vLLM server at the same paths.

With several servers (`APPRENTICE_VLLM_URL=http://a:8000,http://b:8000`) every server holds every loaded version: a
version is loaded on all of them before it goes live (if one refuses, it is unloaded from the others and the old
version stays live), and each request goes to the server with the fewest requests in flight from this process.

Tested over real HTTP against our own server, which answers the same endpoints (tests/test_vllm_client.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx

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
from app.engines.versions import VersionTable
from learner.chat import encode_chat

log = logging.getLogger(__name__)
LOAD, UNLOAD = "/v1/load_lora_adapter", "/v1/unload_lora_adapter"


class RemoteError(EngineError):
    """The vLLM server refused a request or could not be reached; keeps the server's HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """Server base URLs from a comma-separated string or a list; at least one."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    found = [u.strip().rstrip("/") for u in items if u.strip()]
    if not found:
        raise EngineError("no vLLM server URL given (APPRENTICE_VLLM_URL)")
    return found


class VllmEngine(Engine):
    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        base_model: str,
        tokenizer: Any,
        api_key: str = "",
        limits: Limits | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.urls = parse_urls(urls)
        self._busy = dict.fromkeys(self.urls, 0)  # requests in flight per server (under _state)
        self._turn = 0  # rotates the choice among equally busy servers
        self.base_model = base_model
        self.tokenizer = tokenizer
        self.limits = limits or Limits()
        self._share = UserShare(self.limits.max_per_user)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(self.limits.request_timeout, connect=connect_timeout)
        self._versions = VersionTable(base_handle=base_model)  # handles: the names the vLLM servers serve
        self._state = threading.Lock()  # _busy and _turn
        self._admin = threading.Lock()  # one load / unload / activate at a time

    @property
    def active(self) -> str:
        return self._versions.active

    def loaded(self) -> list[str]:
        return self._versions.loaded()

    # ---- HTTP

    async def _post(self, url: str, path: str, payload: dict[str, Any]) -> httpx.Response:
        try:
            async with httpx.AsyncClient(timeout=self._timeout, headers=self._headers) as client:
                response = await client.post(url + path, json=payload)
        except httpx.HTTPError as e:
            raise RemoteError(f"the vLLM server at {url} cannot be reached: {e}", 502) from e
        if response.status_code >= 400:
            raise _remote_error(response.status_code, response.text, url)
        return response

    async def _post_everywhere(self, path: str, payload: dict[str, Any]) -> list[RemoteError | None]:
        """The same admin call on every server at once; each server's error (or None), in the order of `urls`."""
        results = await asyncio.gather(*(self._post(u, path, payload) for u in self.urls), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, RemoteError):
                raise r
        return [r if isinstance(r, RemoteError) else None for r in results]

    async def _unload_everywhere(self, name: str) -> None:
        errors = [e for e in await self._post_everywhere(UNLOAD, {"lora_name": name}) if e]
        if errors:
            raise errors[0]

    @contextlib.contextmanager
    def _server(self) -> Iterator[str]:
        """The server for one request: the least busy, taking turns among equals."""
        with self._state:
            self._turn += 1
            order = self.urls[self._turn % len(self.urls) :] + self.urls[: self._turn % len(self.urls)]
            url = min(order, key=self._busy.__getitem__)
            self._busy[url] += 1
        try:
            yield url
        finally:
            with self._state:
                self._busy[url] -= 1

    async def _admin_lock(self) -> None:
        await asyncio.to_thread(self._admin.acquire)

    # ---- versions

    async def load(self, name: str, adapter_path: str | None) -> None:
        await self._admin_lock()
        try:
            await self._load(name, adapter_path)
        finally:
            self._admin.release()

    async def _load(self, name: str, adapter_path: str | None) -> None:
        if self._versions.reuse(name, adapter_path):
            return
        if adapter_path is None:
            raise EngineError(f"version {name!r} needs an adapter folder (only {BASE_VERSION} is the base model)")
        payload = {"lora_name": name, "lora_path": adapter_path}
        # "already loaded": by an earlier run of ours, and the same name is the same version
        errors = [e if e and "already" not in str(e) else None for e in await self._post_everywhere(LOAD, payload)]
        if any(errors):
            for url, error in zip(self.urls, errors, strict=True):
                if error is None:  # no server keeps a version that did not load everywhere
                    with contextlib.suppress(RemoteError):
                        await self._post(url, UNLOAD, {"lora_name": name})
            raise next(e for e in errors if e)
        self._versions.add(name, name, adapter_path)

    async def unload(self, name: str) -> None:
        await self._admin_lock()
        try:
            self._versions.check_unload(name)
            await self._retire(name)
        finally:
            self._admin.release()

    async def activate(self, name: str, adapter_path: str | None) -> None:
        await self._admin_lock()
        try:
            await self._load(name, adapter_path)
            await self._retire(self._versions.set_active(name))
        finally:
            self._admin.release()

    async def _retire(self, name: str) -> None:
        """Unload now if no reply streams from `name`, else when its last reply ends (see `_release`)."""
        if self._versions.retire(name) is not None:
            await self._unload_everywhere(name)

    def _release(self, name: str) -> None:
        if self._versions.release(name) is None:
            return
        task = asyncio.get_running_loop().create_task(self._unload_everywhere(name))
        task.add_done_callback(lambda t: t.exception() and log.error("unloading %s failed: %s", name, t.exception()))

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
        generate = lambda ids: self._generate(ids, sampling, version)  # noqa: E731
        return admitted(self, self._share, encode, chars, sampling, user, generate, allow_zero_tokens=allow_zero_tokens)

    async def _generate(self, ids: list[int], sampling: Sampling, version: str | None) -> AsyncIterator[Delta]:
        name, served = self._versions.acquire(version)
        try:
            if sampling.max_tokens == 0:
                yield Delta(text="", version=name, finish_reason="length", prompt_tokens=len(ids))
                return
            text, count = "", 0
            async for choice, usage in self._completion_events(str(served), ids, sampling):
                count = usage.get("completion_tokens", count + (1 if choice.get("text") else 0))
                finish = choice.get("finish_reason")
                text += choice.get("text") or ""
                if not (choice.get("text") or finish):
                    continue
                # the server does not send token ids: re-encode the finished text (for logprobs of the completion)
                token_ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if finish else ()
                yield Delta(choice.get("text") or "", name, finish, len(ids), len(token_ids) or count, token_ids)
                if finish:
                    return
        finally:
            self._release(name)

    async def _completion_events(
        self, model: str, ids: list[int], sampling: Sampling
    ) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any]]]:
        with self._server() as url:
            async for event in self._completion_events_from(url, model, ids, sampling):
                yield event

    async def _completion_events_from(
        self, url: str, model: str, ids: list[int], sampling: Sampling
    ) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any]]]:
        payload = {
            "model": model,
            "prompt": ids,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stop": list(sampling.stop) or None,
            "seed": sampling.seed,
            "ignore_eos": sampling.ignore_eos,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            async with (
                httpx.AsyncClient(timeout=self._timeout, headers=self._headers) as client,
                client.stream("POST", url + "/v1/completions", json=payload) as response,
            ):
                if response.status_code >= 400:
                    raise _remote_error(response.status_code, (await response.aread()).decode(errors="replace"), url)
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[len("data: ") :])
                    if "error" in event:
                        raise _remote_error(502, json.dumps(event), url)
                    usage = event.get("usage") or {}
                    for choice in event.get("choices") or [{}]:
                        yield choice, usage
        except httpx.HTTPError as e:
            raise RemoteError(f"the vLLM server at {url} failed mid-reply: {e}", 502) from e

    async def prompt_logprobs(
        self, prompt: str | list[int], *, version: str | None = None, top: int = 0
    ) -> list[TokenLogprob]:
        ids = await self.prompt_ids(lambda: self.encode(prompt), len(prompt), self.limits)
        name, served = self._versions.acquire(version)
        try:
            payload = {
                "model": served,
                "prompt": ids,
                "max_tokens": 1,  # vLLM scores the prompt while generating; the one extra token is dropped below
                "temperature": 0,
                "echo": True,
                "logprobs": max(top, 1),
            }
            with self._server() as url:
                logprobs = (await self._post(url, "/v1/completions", payload)).json()["choices"][0]["logprobs"]
        finally:
            self._release(name)
        rows = []
        for i, token_id in enumerate(ids):
            alternatives = dict(list((logprobs["top_logprobs"][i] or {}).items())[:top])
            rows.append(
                TokenLogprob(
                    token=logprobs["tokens"][i],
                    logprob=logprobs["token_logprobs"][i],
                    offset=logprobs["text_offset"][i],
                    top=alternatives,
                    token_id=token_id,
                )
            )
        return rows


def _remote_error(status: int, body: str, url: str) -> RemoteError:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.strip()[:500] or f"HTTP {status}"
    if status == 404:
        return RemoteError(f"the vLLM server at {url} does not know this model: {message}", 404)
    return RemoteError(f"the vLLM server at {url} answered {status}: {message}", status if status < 500 else 502)
