"""The engine interface every inference backend implements. Engines work in messages and text, know nothing of
HTTP or the UI, and never touch the database: the caller decides which version is active and records it.

A reply is produced by exactly one model version: every `Delta` of one `stream` carries the same `version`.
Version names are strings; `BASE_VERSION` ("v0") is the base model without an adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from storage.errors import ApprenticeError

BASE_VERSION = "v0"
STOP_LIMIT = 4  # stop strings per request, as in OpenAI's API
INLINE_TOKENIZE_CHARS = 4096  # longer inputs are tokenized in a worker thread, off the event loop


class EngineError(ApprenticeError):
    """Bad request to an engine (unknown version, input over the limit, ...): a 4xx for the caller."""


class EngineBusy(ApprenticeError):
    """Every generation slot is taken and the waiting line is full, or the wait ran out: try again later."""

    status = 503


@dataclass(frozen=True)
class Limits:
    """What one server lets a request ask for (app.settings.Settings holds the configured values)."""

    max_input_tokens: int = 4096
    max_new_tokens: int = 1024
    max_concurrent: int = 8
    max_queued: int = 64
    request_timeout: float = 300.0
    max_per_user: int = 16  # generations one user may have running or waiting (each prompt of a request counts)

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            max_input_tokens=settings.max_input_tokens,
            max_new_tokens=settings.max_new_tokens,
            max_concurrent=settings.max_concurrent_generations,
            max_queued=settings.max_queued_requests,
            request_timeout=settings.request_timeout,
            max_per_user=settings.max_requests_per_user,
        )


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7  # 0 means greedy (so does anything under 1e-4: app.engines.sampling.GREEDY_BELOW)
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # generate max_tokens whatever the model says (benchmarks)


def check_sampling(sampling: Sampling, limits: Limits, *, allow_zero_tokens: bool = False) -> None:
    """Refuse sampling values out of range with a message naming the value and the limit."""
    if not 0 <= sampling.temperature <= 2:
        raise EngineError(f"temperature must be between 0 and 2, not {sampling.temperature}")
    if not 0 < sampling.top_p <= 1:
        raise EngineError(f"top_p must be greater than 0 and at most 1, not {sampling.top_p}")
    if sampling.max_tokens < (0 if allow_zero_tokens else 1):
        raise EngineError(f"max_tokens must be at least {0 if allow_zero_tokens else 1}, not {sampling.max_tokens}")
    if sampling.max_tokens > limits.max_new_tokens:
        raise EngineError(
            f"max_tokens {sampling.max_tokens} is over this server's limit of {limits.max_new_tokens} (max_new_tokens)"
        )
    if len(sampling.stop) > STOP_LIMIT or not all(isinstance(s, str) and s for s in sampling.stop):
        raise EngineError(f"stop takes at most {STOP_LIMIT} non-empty strings")


def check_input_length(n_tokens: int, limits: Limits) -> None:
    if n_tokens > limits.max_input_tokens:
        raise EngineError(
            f"the input is {n_tokens} tokens long, over this server's limit of {limits.max_input_tokens} tokens "
            "(max_input_tokens); shorten the conversation"
        )


class UserShare:
    """How many generations each user has running or waiting: one user cannot take every slot and the whole
    waiting line. Thread-safe; `hold(user)` is the only way in."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, user: str | None) -> Iterator[None]:
        if user is None:  # the server's own work (benchmarks, evaluation)
            yield
            return
        with self._lock:
            if self._held[user] >= self.limit:
                raise EngineBusy(
                    f"you already have {self._held[user]} replies running or waiting, this server's limit per user "
                    "(max_requests_per_user); try again when one has finished"
                )
            self._held[user] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[user] -= 1
                if self._held[user] <= 0:
                    del self._held[user]


@dataclass
class Delta:
    text: str
    version: str
    finish_reason: str | None = None  # set on the last delta: "stop" | "length" | "timeout"
    prompt_tokens: int = 0
    completion_tokens: int = 0  # running count
    token_ids: tuple[int, ...] = ()  # on the last delta: every generated token id (for logprobs)


@dataclass
class TokenLogprob:
    token: str
    logprob: float | None  # None for the first token of an echoed prompt
    offset: int  # character offset in the text
    top: dict[str, float] = field(default_factory=dict)
    token_id: int = -1


class Engine(ABC):
    """One base model, any number of loaded versions (LoRA adapters), one of them active for new requests."""

    tokenizer: Any  # the base model's tokenizer (chat template, token ids of prompts)
    limits: Limits  # what a request may ask for
    _longest_token: int = 0

    def longest_token_chars(self) -> int:
        """An upper bound on the characters one token stands for (its byte-level spelling is at least as long)."""
        if not self._longest_token:
            vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
            self._longest_token = max(len(t) for t in vocab if t is not None)
        return self._longest_token

    async def prompt_ids(self, encode: Callable[[], list[int]], text_chars: int, limits: Limits) -> list[int]:
        """Tokenize off the event loop, after refusing at once a text too long to fit the input limit (whatever it
        tokenizes to), so a huge message never occupies the tokenizer."""
        if text_chars > limits.max_input_tokens * self.longest_token_chars():
            raise EngineError(
                f"the input is {text_chars} characters long, more than {limits.max_input_tokens} tokens could hold "
                f"(this server's limit is {limits.max_input_tokens} tokens, max_input_tokens); shorten the conversation"
            )
        # a short text tokenizes in well under a millisecond: a thread would cost more (and reorder requests)
        ids = encode() if text_chars <= INLINE_TOKENIZE_CHARS else await asyncio.to_thread(encode)
        check_input_length(len(ids), limits)
        return ids

    def encode(self, prompt: str | list[int]) -> list[int]:
        """Token ids of a raw prompt (a list of ids is checked and returned as is)."""
        ids = list(prompt) if isinstance(prompt, list) else self.tokenizer(prompt)["input_ids"]
        if not ids:
            raise EngineError("the prompt is empty")
        vocab = len(self.tokenizer)
        if any(not isinstance(i, int) or not 0 <= i < vocab for i in ids):
            raise EngineError(f"prompt token ids must be integers from 0 to {vocab - 1}")
        return ids

    @property
    @abstractmethod
    def active(self) -> str:
        """The version new requests get when they name none."""

    @abstractmethod
    def loaded(self) -> list[str]:
        """Versions currently loaded (the active one included)."""

    @abstractmethod
    async def load(self, name: str, adapter_path: str | None) -> None:
        """Load a version beside the others (no-op if loaded). `adapter_path` None only for the base version."""

    @abstractmethod
    async def unload(self, name: str) -> None:
        """Unload a version once no reply streams from it; refuses the active one."""

    @abstractmethod
    async def activate(self, name: str, adapter_path: str | None) -> None:
        """Hot swap: load `name` beside the live version, flip new requests to it, let replies already streaming
        finish on their own version, then unload the old one."""

    @abstractmethod
    def chat(
        self, messages: list[dict[str, str]], sampling: Sampling, *, version: str | None = None, user: str | None = None
    ) -> AsyncIterator[Delta]:
        """Stream one assistant reply to a conversation (chat template applied, message text kept as text).
        `user` names whose share of the server it counts against (Limits.max_per_user); None: the server's own."""

    @abstractmethod
    def complete(
        self, prompt: str | list[int], sampling: Sampling, *, version: str | None = None, user: str | None = None
    ) -> AsyncIterator[Delta]:
        """Stream a raw continuation of `prompt` (text or token ids; no chat template). max_tokens may be 0."""

    @abstractmethod
    async def prompt_logprobs(
        self, prompt: str | list[int], *, version: str | None = None, top: int = 0
    ) -> list[TokenLogprob]:
        """Log-probability of every token of `prompt` given the tokens before it (for /v1/completions echo); the
        first token's is None. `top` > 0 adds that many most likely tokens at each position."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop background work and free resources."""


async def admitted(
    engine: Engine,
    share: UserShare,
    encode: Callable[[], list[int]],
    chars: int,
    sampling: Sampling,
    user: str | None,
    generate: Callable[[list[int]], AsyncIterator[Delta]],
    *,
    allow_zero_tokens: bool = False,
) -> AsyncIterator[Delta]:
    """One request through the admission every engine applies: the sampling and the input length checked, the user's
    share held while the reply streams (`generate(prompt ids)`), the reply closed at once when the caller stops."""
    check_sampling(sampling, engine.limits, allow_zero_tokens=allow_zero_tokens)
    ids = await engine.prompt_ids(encode, chars, engine.limits)
    replies = generate(ids)
    try:
        with share.hold(user):
            async for delta in replies:
                yield delta
    finally:
        await replies.aclose()  # at once, not when collected: frees the slot (its cleanup never waits)
