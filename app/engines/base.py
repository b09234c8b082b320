"""The engine interface every inference backend implements. Engines work in messages and text, know nothing of
HTTP or the UI, and never touch the database: the caller decides which version is active and records it.

A reply is produced by exactly one model version: every `Delta` of one `stream` carries the same `version`.
Version names are strings; `BASE_VERSION` ("v0") is the base model without an adapter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from storage.errors import ApprenticeError


class EngineError(ApprenticeError):
    """Bad request to an engine (unknown version, input over the limit, ...): a 4xx for the caller."""


class EngineBusy(ApprenticeError):
    status = 503


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Delta:
    text: str
    version: str
    finish_reason: str | None = None  # set on the last delta: "stop" | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0  # running count


@dataclass
class TokenLogprob:
    token: str
    logprob: float | None  # None for the first token of an echoed prompt
    offset: int  # character offset in the text
    top: dict[str, float] = field(default_factory=dict)


class Engine(ABC):
    """One base model, any number of loaded versions (LoRA adapters), one of them active for new requests."""

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
        self, messages: list[dict[str, str]], sampling: Sampling, *, version: str | None = None
    ) -> AsyncIterator[Delta]:
        """Stream one assistant reply to a conversation (chat template applied, message text kept as text)."""

    @abstractmethod
    def complete(self, prompt: str, sampling: Sampling, *, version: str | None = None) -> AsyncIterator[Delta]:
        """Stream a raw text continuation of `prompt` (no chat template)."""

    @abstractmethod
    async def prompt_logprobs(self, text: str, *, version: str | None = None, top: int = 0) -> list[TokenLogprob]:
        """Log-probability of every token of `text` given the tokens before it (for /v1/completions echo)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop background work and free resources."""
