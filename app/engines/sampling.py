"""Per-request token choice and text assembly for the embedded engine: sampling (temperature, top-p, seeded
generator), incremental detokenization that never splits a multi-byte character, and stop strings that are never
streamed even in part.

Pure functions and small classes over torch tensors and a tokenizer; no threads, no model. Tested through
tests/test_engine.py.
"""

from __future__ import annotations

from typing import Any

import torch

from app.engines.base import Sampling


def make_generator(sampling: Sampling, device: torch.device) -> torch.Generator | None:
    """A per-request generator when a seed is given, so a seeded reply does not depend on its batch neighbours."""
    if sampling.seed is None or sampling.temperature == 0:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(sampling.seed)
    return gen


def choose_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """The next token from one row of logits: argmax at temperature 0, else temperature + nucleus sampling."""
    if sampling.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= sampling.top_p
        sorted_probs[drop] = 0.0
        pick = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[pick])
    return int(torch.multinomial(probs, 1, generator=generator))


class Detokenizer:
    """Text of a growing list of token ids, handed out in pieces that are whole characters.

    Decodes only a short window (the technique of TGI and vLLM): the text of ids[prefix:] minus that of
    ids[prefix:read]; a piece ending in U+FFFD is held back until the rest of its bytes arrive."""

    def __init__(self, tokenizer: Any, *, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=self.skip_special_tokens, clean_up_tokenization_spaces=False
        )

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end (an incomplete character decodes as U+FFFD)."""
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :]


class StopText:
    """The reply's text with stop strings applied: `feed` returns the part now safe to stream (no stop string, and
    no tail that might still grow into one) and whether a stop string ended the reply."""

    def __init__(self, stop: tuple[str, ...]) -> None:
        self.stop = tuple(s for s in stop if s)
        self.text = ""
        self.sent = 0

    def feed(self, piece: str, *, final: bool = False) -> tuple[str, bool]:
        self.text += piece
        hits = [i for i in (self.text.find(s, max(0, self.sent - len(s))) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            return self._take(len(self.text)), True
        safe = len(self.text) if final else len(self.text) - self._held_tail()
        return self._take(safe), False

    def _held_tail(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of some stop string."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), longest, -1):
                if self.text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _take(self, upto: int) -> str:
        upto = max(upto, self.sent)
        out, self.sent = self.text[self.sent : upto], upto
        return out
