"""OpenAI-compatible routes under /v1: chat completions (recorded via app.services.chat), raw completions with echo
and logprobs (lm-eval's `local-completions`), models, feedback, and vLLM's adapter load/unload (admin keys only).

Every response names the model version in `X-Model-Version` (a stream: the version chosen when it started) and
every completion carries its `id`. Handlers stay thin: validation in protocol.py, work in chat_service / the engine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from app.api.deps import AdminDep, StateDep, UserDep
from app.api.errors import error_body
from app.api.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    FeedbackRequest,
    LoadAdapterRequest,
    UnloadAdapterRequest,
)
from app.api.responses import EVENT_STREAM, ChatCompletion, Completion, FeedbackOut, ModelList, error_responses
from app.engines.base import Delta, Sampling
from app.services import chat as chat_service
from app.services.chat import TurnDelta, new_response_id
from app.state import AppState
from storage.errors import ApprenticeError, Forbidden, NotFound

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1")
VERSION_HEADER = "X-Model-Version"
ACTIVE_ALIASES = ("default", "active")
GENERATING = {**EVENT_STREAM, **error_responses(400, 401, 404, 503)}


def resolve_model(state: AppState, model: str | None) -> str | None:
    """The version a request names: None (the active one) for no name, an alias or the base model's name."""
    if not model or model in ACTIVE_ALIASES or model == state.settings.model:
        return None
    loaded = state.engine.loaded()
    if model not in loaded:
        raise NotFound(f"unknown model {model!r}; this server has {', '.join(loaded)} (or omit it for the active one)")
    return model


def max_tokens_of(state: AppState, requested: int | None) -> int:
    return state.settings.max_new_tokens if requested is None else requested


def _finish(reason: str | None) -> str | None:
    return "length" if reason == "timeout" else reason  # a cut by the server's time limit, like a cut by max_tokens


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _next_or_error(stream: AsyncIterator[Any]) -> Any:
    """The stream's next item, or None when it failed (logged): a stream that has begun ends with an error event."""
    try:
        return await anext(stream)
    except Exception:
        log.exception("a streamed reply failed")
        return None


def _stream_error() -> str:
    return _sse(error_body(500, "the reply failed; the server log has the details")) + "data: [DONE]\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@router.get("/models", response_model=ModelList, responses=error_responses(401))
async def list_models(state: StateDep, _user: UserDep) -> JSONResponse:
    active = state.engine.active
    names = [active] + [n for n in state.engine.loaded() if n != active]
    root = state.settings.model
    data = [
        {"id": n, "object": "model", "created": 0, "owned_by": "apprentice", "root": root, "active": n == active}
        for n in names
    ]
    return JSONResponse({"object": "list", "data": data}, headers={VERSION_HEADER: active})


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={**EVENT_STREAM, **error_responses(400, 401, 404, 503)},
)
async def chat_completions(
    body: ChatCompletionRequest, state: StateDep, user: UserDep
) -> JSONResponse | StreamingResponse:
    sampling = body.sampling(max_tokens_of(state, body.max_completion_tokens or body.max_tokens))
    turn = chat_service.stream_turn(
        state,
        user_id=user.id,
        conversation_id=None,
        messages=body.message_dicts(),
        sampling=sampling,
        version=resolve_model(state, body.model),
    )
    first = await anext(turn)  # errors surface here, as a proper 4xx; the version is known from now on
    headers = {VERSION_HEADER: first.version}
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_chat_events(first, turn, usage), media_type="text/event-stream", headers=headers)
    last = first
    async for delta in turn:
        last = delta
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": last.text},
        "finish_reason": _finish(last.finish_reason),
        "logprobs": None,
    }
    payload = {
        "id": last.response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": last.version,
        "choices": [choice],
        "usage": _usage(last.prompt_tokens, last.completion_tokens),
    }
    return JSONResponse(payload, headers=headers)


async def _chat_events(first: TurnDelta, turn: AsyncIterator[TurnDelta], usage: bool) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: dict[str, str], finish: str | None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": _finish(finish), "logprobs": None}
        payload = {
            "id": first.response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": first.version,
            "choices": [choice],
        }
        return _sse(payload)

    try:
        yield chunk({"role": "assistant", "content": ""}, None)
        d = first
        while True:
            if d.delta:
                yield chunk({"content": d.delta}, None)
            if d.finish_reason is not None:
                yield chunk({}, d.finish_reason)
                break
            d = await _next_or_error(turn)
            if d is None:
                yield _stream_error()
                return
        if usage:
            yield _sse(
                {
                    "id": first.response_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": first.version,
                    "choices": [],
                    "usage": _usage(d.prompt_tokens, d.completion_tokens),
                }
            )
        yield "data: [DONE]\n\n"
    finally:
        await turn.aclose()


@router.post("/completions", response_model=Completion, responses=GENERATING)
async def completions(body: CompletionRequest, state: StateDep, user: UserDep) -> JSONResponse | StreamingResponse:
    prompts = body.prompts()
    share = state.settings.max_requests_per_user
    if len(prompts) > share:
        raise ApprenticeError(f"at most {share} prompts per request (max_requests_per_user), not {len(prompts)}")
    version = resolve_model(state, body.model) or state.engine.active  # one version for every prompt
    sampling = body.sampling(body.max_tokens)
    owner = f"user-{user.id}"
    if body.stream:
        if len(prompts) > 1 or body.logprobs is not None:
            raise ApprenticeError("streaming takes one prompt and no logprobs; send stream=false for those")
        stream = state.engine.complete(prompts[0], sampling, version=version, user=owner)
        first = await anext(stream)
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _completion_events(first, stream, new_response_id("cmpl"), usage),
            media_type="text/event-stream",
            headers={VERSION_HEADER: first.version},
        )
    try:  # one prompt refused (503 for a full share, a 4xx) cancels the others, queued or running
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_one_completion(state, p, sampling, version, body, owner)) for p in prompts]
    except* ApprenticeError as errors:
        raise errors.exceptions[0] from None
    choices = [t.result() for t in tasks]
    for i, choice in enumerate(choices):
        choice["index"] = i
    usage = _usage(sum(c.pop("_prompt") for c in choices), sum(c.pop("_completion") for c in choices))
    payload = {
        "id": new_response_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": version,
        "choices": choices,
        "usage": usage,
    }
    return JSONResponse(payload, headers={VERSION_HEADER: version})


async def _one_completion(
    state: AppState, prompt: str | list[int], sampling: Sampling, version: str, body: CompletionRequest, owner: str
) -> dict[str, Any]:
    engine = state.engine
    text, last = "", Delta(text="", version=version)
    async for last in engine.complete(prompt, sampling, version=version, user=owner):
        text += last.text
    prompt_text = prompt if isinstance(prompt, str) else engine.tokenizer.decode(prompt)
    choice: dict[str, Any] = {
        "text": prompt_text + text if body.echo else text,
        "finish_reason": _finish(last.finish_reason),
        "logprobs": None,
        "_prompt": last.prompt_tokens,
        "_completion": last.completion_tokens,
    }
    if body.logprobs is not None:
        prompt_ids = engine.encode(prompt)
        rows = await engine.prompt_logprobs(prompt_ids + list(last.token_ids), version=version, top=body.logprobs)
        if not body.echo:
            start = rows[len(prompt_ids)].offset if len(rows) > len(prompt_ids) else 0
            rows = [r for r in rows[len(prompt_ids) :]]
            for r in rows:
                r.offset -= start
        choice["logprobs"] = {
            "tokens": [r.token for r in rows],
            "token_logprobs": [r.logprob for r in rows],
            "top_logprobs": [r.top if r.logprob is not None else None for r in rows],
            "text_offset": [r.offset for r in rows],
        }
    return choice


async def _completion_events(
    first: Delta, stream: AsyncIterator[Delta], response_id: str, usage: bool
) -> AsyncIterator[str]:
    created = int(time.time())
    head = {"id": response_id, "object": "text_completion", "created": created, "model": first.version}
    try:
        d = first
        while True:
            choice = {"index": 0, "text": d.text, "logprobs": None, "finish_reason": _finish(d.finish_reason)}
            yield _sse({**head, "choices": [choice]})
            if d.finish_reason is not None:
                break
            d = await _next_or_error(stream)
            if d is None:
                yield _stream_error()
                return
        if usage:
            yield _sse({**head, "choices": [], "usage": _usage(d.prompt_tokens, d.completion_tokens)})
        yield "data: [DONE]\n\n"
    finally:
        await stream.aclose()


@router.post("/feedback", response_model=FeedbackOut, responses=error_responses(400, 401, 404))
async def feedback(body: FeedbackRequest, state: StateDep, user: UserDep) -> JSONResponse:
    rating = body.rating_value()
    if rating is None and body.correction is None:
        raise ApprenticeError("send a rating (1 or -1) or a correction (with an optional skill)")
    out: dict[str, Any] = {"object": "feedback", "response_id": body.response_id, "rating": rating}
    if rating is not None:
        fb = await asyncio.to_thread(
            chat_service.rate_reply,
            state,
            user_id=user.id,
            rating=rating,
            reason=body.reason,
            response_id=body.response_id,
        )
        out["id"] = f"feedback-{fb.id}"
    if body.correction is not None:
        demo = await asyncio.to_thread(
            chat_service.correct_reply,
            state,
            user_id=user.id,
            correction=body.correction,
            skill=body.skill,
            response_id=body.response_id,
        )
        out["id"] = out.get("id") or f"demonstration-{demo.id}"
        out["demonstration"] = {"id": demo.id, "status": demo.status, "skill": demo.skill}
    return JSONResponse(out, headers={VERSION_HEADER: state.engine.active})


@router.post("/load_lora_adapter", response_class=PlainTextResponse, responses=error_responses(400, 401, 403, 404, 409))
async def load_lora_adapter(body: LoadAdapterRequest, state: StateDep, _admin: AdminDep) -> PlainTextResponse:
    path = Path(body.lora_path).resolve()  # symlinks and ".." resolved before the check
    roots = state.settings.adapter_folders()
    if not any(path.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise Forbidden(f"adapters load only from {allowed} (APPRENTICE_ADAPTER_ROOTS adds folders), not {path}")
    await state.engine.load(body.lora_name, str(path))
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


@router.post(
    "/unload_lora_adapter", response_class=PlainTextResponse, responses=error_responses(400, 401, 403, 404, 409)
)
async def unload_lora_adapter(body: UnloadAdapterRequest, state: StateDep, _admin: AdminDep) -> PlainTextResponse:
    await state.engine.unload(body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")
