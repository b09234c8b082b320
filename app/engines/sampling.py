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

GREEDY_BELOW = 1e-4  # temperatures under this pick the most likely token (in float32 the two cannot differ)


def make_generator(sampling: Sampling, device: torch.device) -> torch.Generator | None:
    """A per-request generator when a seed is given, so a seeded reply does not depend on its batch neighbours."""
    if sampling.seed is None or sampling.temperature < GREEDY_BELOW:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(sampling.seed % 2**64)
    return gen


def choose_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """The next token from one row of logits: argmax at temperature 0 (or under GREEDY_BELOW), else temperature +
    nucleus sampling. Cannot fail on any temperature >= 0 and top_p > 0, however small: the scaled logits are
    shifted so the largest is 0 (no overflow), the most likely token always stays in the nucleus, and a row whose
    probabilities are not usable (NaN logits) falls back to argmax."""
    greedy = int(torch.argmax(torch.nan_to_num(logits.float(), nan=float("-inf"))))
    if sampling.temperature < GREEDY_BELOW:
        return greedy
    shifted = torch.nan_to_num(logits.float(), nan=float("-inf"), posinf=float("inf"))
    top = shifted.max()
    if not torch.isfinite(top):
        return greedy
    probs = torch.softmax((shifted - top) / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= sampling.top_p
        drop[0] = False
        sorted_probs[drop] = 0.0
        if not _usable(sorted_probs):
            return greedy
        pick = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[pick])
    if not _usable(probs):
        return greedy
    return int(torch.multinomial(probs, 1, generator=generator))


def _usable(probs: torch.Tensor) -> bool:
    """What torch.multinomial accepts: finite, non-negative, with some mass."""
    return bool(torch.isfinite(probs).all() and (probs >= 0).all() and probs.sum() > 0)


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
