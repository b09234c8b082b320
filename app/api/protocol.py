"""Request bodies of the /v1 API (OpenAI's field names and ranges; unknown fields are ignored as OpenAI does).

Range and type checks happen here, strictly (`"max_tokens": "12"` or `[[false]]` as token ids is refused, not
coerced), so a bad value is a 400 naming the field; text must be valid Unicode (no lone surrogates). Conversation
checks (roles, empty text, the last turn) happen in app.services.chat so the UI gets the same messages. The response
shapes for the OpenAPI document are in app/api/responses.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.engines.base import STOP_LIMIT, Sampling
from storage.errors import ApprenticeError

MAX_SEED = 2**63 - 1


def lone_surrogate(value: Any, where: str = "") -> str | None:
    """Where in a JSON value a string holds a lone surrogate (not valid Unicode, so not storable or tokenizable)."""
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "text"
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = lone_surrogate(key, where) or lone_surrogate(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


class RequestModel(BaseModel):
    """Every request body of the API (the admin API's too): strict types, valid Unicode, unknown fields ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        where = lone_surrogate(data)
        if where:
            raise ValueError(f"{where}: text must be valid Unicode (a lone surrogate such as \\ud800 is not)")
        return data


_Request = RequestModel


class ContentPart(_Request):
    type: str
    text: str | None = None


class ChatMessage(_Request):
    role: str
    content: str | list[ContentPart] | None = None

    def text(self, index: int) -> str:
        if isinstance(self.content, str):
            return self.content
        if self.content is None:
            raise ApprenticeError(f"message {index} ({self.role}) has no content")
        if any(part.type != "text" or part.text is None for part in self.content):
            raise ApprenticeError(f"message {index} has a non-text content part; this server takes text only")
        return "".join(part.text or "" for part in self.content)


class StreamOptions(_Request):
    include_usage: bool = False


class _Sampled(_Request):
    model: str | None = Field(None, description="a version name; the base model's name or none: the active version")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-MAX_SEED, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    ignore_eos: bool = Field(False, description="vLLM's extension: generate max_tokens whatever the model says")

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > STOP_LIMIT or not all(stops):
            raise ValueError(f"stop takes at most {STOP_LIMIT} non-empty strings")
        return value

    def stop_tuple(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def sampling(self, max_tokens: int) -> Sampling:
        defaults = Sampling()
        return Sampling(
            temperature=defaults.temperature if self.temperature is None else self.temperature,
            top_p=defaults.top_p if self.top_p is None else self.top_p,
            max_tokens=max_tokens,
            stop=self.stop_tuple(),
            seed=self.seed,
            ignore_eos=self.ignore_eos,
        )


class ChatCompletionRequest(_Sampled):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("log-probabilities are served by /v1/completions (echo + logprobs), not chat")
        return value

    def message_dicts(self) -> list[dict[str, str]]:
        role = {"developer": "system"}  # OpenAI's newer name for the system role
        return [{"role": role.get(m.role, m.role), "content": m.text(i)} for i, m in enumerate(self.messages)]


class CompletionRequest(_Sampled):
    prompt: str | list[int] | list[list[int]] | list[str]
    max_tokens: int = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            prompts: list[str | list[int]] = [p]
        elif p and all(isinstance(x, int) for x in p):
            prompts = [list(p)]  # type: ignore[arg-type]
        else:
            prompts = list(p)  # type: ignore[arg-type]
        if not prompts or any(len(x) == 0 for x in prompts):
            raise ApprenticeError("prompt must be a non-empty string, list of strings or list of token ids")
        return prompts


class FeedbackRequest(_Request):
    response_id: str = Field(min_length=1, description="the `id` of a chat completion this key's user received")
    rating: Literal[1, -1, "up", "down"] | None = None
    reason: str = Field("", max_length=2000)
    correction: str | None = Field(None, max_length=20000)
    skill: str | None = Field(None, max_length=80)

    def rating_value(self) -> int | None:
        return {"up": 1, "down": -1}.get(self.rating, self.rating)  # type: ignore[arg-type]


class LoadAdapterRequest(_Request):
    lora_name: str = Field(min_length=1, max_length=120)
    lora_path: str = Field(min_length=1)


class UnloadAdapterRequest(_Request):
    lora_name: str = Field(min_length=1, max_length=120)
