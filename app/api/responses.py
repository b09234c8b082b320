"""What the API answers, for the OpenAPI document: the OpenAI routes' response bodies, the error body every route
shares, and `error_responses(...)`, the declared error statuses of a route.

The handlers build these bodies as dicts (app/api/openai.py); tests/test_fuzz.py checks, over the whole document,
that every answer matches what is declared here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorOut(BaseModel):
    """OpenAI's error shape, for every 4xx and 5xx of the API."""

    error: ErrorDetail


ERROR_MEANINGS = {
    400: "Bad input: a malformed body, a value out of range, an input over the server's limits.",
    401: "No API key, or an unknown one.",
    403: "The key's user may not do this.",
    404: "No such version, reply, demonstration, round or job.",
    405: "This path does not take this method.",
    409: "A conflict with the current state (the conversation changed, a version is active, a job runs).",
    503: "The server is busy (every slot taken and the line full, or this user's share used); try again.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorOut, "description": ERROR_MEANINGS[s]} for s in statuses}


# A 200 that is JSON, or with `"stream": true` server-sent events (`data: <chunk JSON>` lines, then `data: [DONE]`).
EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {"description": "The reply; server-sent events when streaming.", "content": {"text/event-stream": {}}}
}


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] | None
    logprobs: None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str = Field(description="Pass it to /v1/feedback as response_id.")
    object: Literal["chat.completion"]
    created: int
    model: str = Field(description="The version that wrote the reply.")
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: CompletionLogprobs | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str
    active: bool


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard] = Field(description="The active version first, then the other loaded ones.")


class DemonstrationRef(BaseModel):
    id: int
    status: str
    skill: str | None


class FeedbackOut(BaseModel):
    object: Literal["feedback"]
    id: str
    response_id: str
    rating: int | None
    demonstration: DemonstrationRef | None = None


class Health(BaseModel):
    status: Literal["ok"]
    version: str
