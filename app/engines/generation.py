"""The embedded engine's generation loop: one thread owns the model and serves every request in one batch.

Continuous batching: a request is prefilled alone (in chunks, so a long prompt never stalls the others for long),
then joins the running batch; its KV cache is left-padded to the batch's length and the attention mask hides the
padding. Every step decodes one token for every row and a finished or cancelled row leaves at once. LoRA versions mix
in one batch through peft's `adapter_names` (each row names its adapter, "__base__" for version 0), fed to the LoRA
layers by forward pre-hooks registered once, so a step costs one forward whatever versions are in it. Work that must
not overlap a forward (scoring, adapter injection and deletion) runs in this thread between steps through `call`.

No asyncio here: a job reports through its `emit` callback (thread-safe on the caller's side).
"""

from __future__ import annotations

import collections
import concurrent.futures
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from app.engines.base import Delta, EngineBusy, Sampling
from app.engines.sampling import GREEDY_BELOW, Detokenizer, StopText, choose_token, make_generator

log = logging.getLogger(__name__)
BASE_ADAPTER = "__base__"
SCORE_CHUNK = 512  # tokens per forward when scoring a prompt (bounds the logits held at once)


@dataclass(eq=False)
class Job:
    prompt: list[int]
    adapter: str  # peft adapter key, or BASE_ADAPTER
    version: str
    sampling: Sampling
    deadline: float  # time.monotonic()
    emit: Callable[[Delta | BaseException], None]
    owner: str | None = None  # whose share it counts against: a free slot goes to the owner running the fewest
    cancelled: bool = False
    generated: list[int] = field(default_factory=list)
    prefilled: int = 0
    cache: Any = None
    generator: torch.Generator | None = None
    detok: Detokenizer | None = None
    stop: StopText | None = None


class _Batch:
    """The running rows' shared KV cache, attention mask, next positions and last tokens."""

    def __init__(self, job: Job, cache: DynamicCache, token: int, device: torch.device) -> None:
        length = len(job.prompt)
        self.jobs = [job]
        self.cache = cache
        self.mask = torch.ones(1, length, dtype=torch.long, device=device)
        self.pos = torch.tensor([length], device=device)
        self.last = torch.tensor([[token]], device=device)

    def add(self, other: _Batch) -> None:
        width, other_width = self.mask.shape[1], other.mask.shape[1]
        if width < other_width:
            self._pad_left(other_width - width)
        elif other_width < width:
            other._pad_left(width - other_width)
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([mine.keys, theirs.keys])
            mine.values = torch.cat([mine.values, theirs.values])
        self.jobs += other.jobs
        self.mask = torch.cat([self.mask, other.mask])
        self.pos = torch.cat([self.pos, other.pos])
        self.last = torch.cat([self.last, other.last])

    def _pad_left(self, n: int) -> None:
        for layer in self.cache.layers:
            shape = (*layer.keys.shape[:2], n, layer.keys.shape[3])
            layer.keys = torch.cat([layer.keys.new_zeros(shape), layer.keys], dim=2)
            layer.values = torch.cat([layer.values.new_zeros(shape), layer.values], dim=2)
        self.mask = torch.cat([self.mask.new_zeros(self.mask.shape[0], n), self.mask], dim=1)

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows`, then drop leading columns that are padding in every remaining row."""
        index = torch.tensor(rows, device=self.mask.device)
        self.jobs = [self.jobs[i] for i in rows]
        self.mask, self.pos, self.last = self.mask[index], self.pos[index], self.last[index]
        start = int((self.mask.sum(0) > 0).nonzero()[0])
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]


class GenerationLoop:
    """The thread that owns the model. `submit` jobs; `call` a function between steps; `close` to stop."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch: int,
        max_waiting: int,
        prefill_chunk: int = 256,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.prefill_chunk = prefill_chunk
        eos = model.generation_config.eos_token_id
        self.eos_ids = {*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None}
        self.adapter_names: list[str] = []  # read by the LoRA layers' pre-hooks during each forward
        # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, and goes in 5.40)
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.stats = {"steps": 0, "tokens": 0, "max_rows": 0}
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._calls: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._prefilling: deque[Job] = deque()
        self._batch: _Batch | None = None
        self._admitted: set[Job] = set()  # prefilling or decoding: what counts against max_batch
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="apprentice-generation", daemon=True)
        self._thread.start()

    # ---- caller side (any thread)

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise EngineBusy("the server is shutting down")
            if len(self._waiting) >= self.max_waiting + max(0, self.max_batch - self._busy()):
                raise EngineBusy(
                    f"the server is busy: {self.max_batch} replies are being generated and {len(self._waiting)} "
                    "requests wait (max_queued_requests); try again shortly"
                )
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """The caller is gone: its slot is free for the next request now; the row leaves before the next step."""
        job.cancelled = True
        with self._cond:
            self._admitted.discard(job)
            if job in self._waiting:
                self._waiting.remove(job)
            self._cond.notify()

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the generation loop is closed")
            self._calls.append((fn, future))
            self._cond.notify()
        return future

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the current step; every job still in flight or waiting gets an error."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=timeout)

    def _busy(self) -> int:
        return len(self._admitted)

    # ---- loop side

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._closed or self._calls or self._waiting or self._busy()):
                        self._cond.wait()
                    if self._closed:
                        break
                    calls = list(self._calls)
                    self._calls.clear()
                for fn, future in calls:
                    self._run_call(fn, future)
                try:
                    with self._cond:
                        self._admit()
                    self._drop_finished()
                    self._prefill()
                    if self._batch is not None:
                        self._step()
                except Exception as e:  # a bug or out of memory: fail the jobs in flight, keep serving the rest
                    log.exception("generation step failed")
                    self._fail_all(e)
        self._fail_all(RuntimeError("the server is shutting down"))

    def _run_call(self, fn: Callable[[], Any], future: concurrent.futures.Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as e:
            future.set_exception(e)

    def _admit(self) -> None:
        now = time.monotonic()
        while self._waiting and self._busy() < self.max_batch:
            job = self._next_waiting()
            if job.cancelled:
                continue
            if now > job.deadline:
                job.emit(EngineBusy("timed out waiting for a free generation slot (request_timeout)"))
                continue
            job.generator = make_generator(job.sampling, self.device)
            job.detok, job.stop = Detokenizer(self.tokenizer), StopText(job.sampling.stop)
            job.cache = DynamicCache(config=self.model.config)
            self._prefilling.append(job)
            self._admitted.add(job)
        for job in [j for j in self._waiting if j.cancelled or now > j.deadline]:
            self._waiting.remove(job)
            if not job.cancelled:
                job.emit(EngineBusy("timed out waiting for a free generation slot (request_timeout)"))

    def _next_waiting(self) -> Job:
        """The oldest waiting job of an owner with the fewest jobs admitted: one user's burst waits its turn."""
        running = collections.Counter(j.owner for j in self._admitted)
        job = min(self._waiting, key=lambda j: running[j.owner])  # min keeps the first (oldest) of equals
        self._waiting.remove(job)
        return job

    def _forward(self, adapters: list[str], **kwargs: Any) -> torch.Tensor:
        self.adapter_names = adapters
        return self.model(use_cache=True, logits_to_keep=1, **kwargs).logits[:, -1, :]

    def _prefill(self) -> None:
        budget = self.prefill_chunk
        while self._prefilling and budget > 0:
            job = self._prefilling[0]
            if job.cancelled:
                self._admitted.discard(self._prefilling.popleft())
                continue
            n = min(budget, len(job.prompt) - job.prefilled)
            chunk = torch.tensor([job.prompt[job.prefilled : job.prefilled + n]], device=self.device)
            positions = torch.arange(job.prefilled, job.prefilled + n, device=self.device)[None]
            logits = self._forward(
                [job.adapter], input_ids=chunk, position_ids=positions, **{self._cache_arg: job.cache}
            )
            job.prefilled += n
            budget -= n
            if job.prefilled == len(job.prompt):
                self._prefilling.popleft()
                token = self._choose(job, logits[0])
                if token is None or self._advance(job, token):
                    self._admitted.discard(job)
                else:
                    single = _Batch(job, job.cache, token, self.device)
                    job.cache = None
                    if self._batch is None:
                        self._batch = single
                    else:
                        self._batch.add(single)

    def _step(self) -> None:
        batch = self._batch
        assert batch is not None
        mask = torch.cat([batch.mask, batch.mask.new_ones(batch.mask.shape[0], 1)], dim=1)
        logits = self._forward(
            [j.adapter for j in batch.jobs],
            input_ids=batch.last,
            attention_mask=mask,
            position_ids=batch.pos[:, None],
            **{self._cache_arg: batch.cache},
        )
        batch.mask, batch.pos = mask, batch.pos + 1
        self.stats["steps"] += 1
        self.stats["max_rows"] = max(self.stats["max_rows"], len(batch.jobs))
        if all(j.sampling.temperature < GREEDY_BELOW for j in batch.jobs):
            tokens: list[int | None] = logits.argmax(-1).tolist()
        else:
            tokens = [self._choose(j, logits[i]) for i, j in enumerate(batch.jobs)]
        batch.last = torch.tensor([t or 0 for t in tokens], device=self.device)[:, None]
        done = [t is None or self._advance(job, t) for job, t in zip(batch.jobs, tokens, strict=True)]
        if any(done):
            self._keep([i for i, d in enumerate(done) if not d])

    def _choose(self, job: Job, logits: torch.Tensor) -> int | None:
        """The job's next token; None when choosing failed, and then that job alone has failed (reported to it)."""
        try:
            return choose_token(logits, job.sampling, job.generator)
        except Exception as e:  # sampling is built not to fail; if it still does, the neighbours must not notice
            log.exception("sampling failed for one request")
            job.cancelled = True
            job.emit(RuntimeError(f"sampling failed: {e}"))
            return None

    def _advance(self, job: Job, token: int) -> bool:
        """Account one new token of `job`, stream its text; True when the job is finished."""
        self.stats["tokens"] += 1
        finish = None
        if token in self.eos_ids and not job.sampling.ignore_eos:
            finish, piece = "stop", job.detok.flush()
        else:
            job.generated.append(token)
            piece = job.detok.add(token)
            if len(job.generated) >= job.sampling.max_tokens:
                finish = "length"
            elif time.monotonic() > job.deadline:
                finish = "timeout"
            if finish:
                piece += job.detok.flush()
        text, stopped = job.stop.feed(piece, final=finish is not None)
        finish = "stop" if stopped else finish
        if text or finish:
            job.emit(
                Delta(
                    text=text,
                    version=job.version,
                    finish_reason=finish,
                    prompt_tokens=len(job.prompt),
                    completion_tokens=len(job.generated),
                    token_ids=tuple(job.generated) if finish else (),
                )
            )
        return finish is not None or job.cancelled

    def score(self, ids: list[int], adapter: str, top: int) -> list[tuple[float | None, dict[int, float]]]:
        """(log-probability of each token given those before it, its `top` most likely alternatives); the first
        token has (None, {}). Runs in this thread (through `call`), in chunks so a long text never holds all logits."""
        self.adapter_names = [adapter]
        cache = DynamicCache(config=self.model.config)
        out: list[tuple[float | None, dict[int, float]]] = [(None, {})]
        for start in range(0, len(ids), SCORE_CHUNK):
            chunk = ids[start : start + SCORE_CHUNK]
            logits = self.model(
                input_ids=torch.tensor([chunk], device=self.device),
                position_ids=torch.arange(start, start + len(chunk), device=self.device)[None],
                use_cache=True,
                **{self._cache_arg: cache},
            ).logits[0]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            following = ids[start + 1 : start + 1 + len(chunk)]  # the token each position predicts
            rows = torch.arange(len(following), device=self.device)
            picked = logprobs[rows, torch.tensor(following, dtype=torch.long, device=self.device)].tolist()
            if top > 0:
                values, indices = logprobs[: len(following)].topk(top, dim=-1)
                tops = [dict(zip(i, v, strict=True)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]
            else:
                tops = [{} for _ in following]
            out += list(zip(picked, tops, strict=True))
        return out

    def _drop_finished(self) -> None:
        if self._batch is not None:
            keep = [i for i, j in enumerate(self._batch.jobs) if not j.cancelled]
            if len(keep) < len(self._batch.jobs):
                self._keep(keep)

    def _keep(self, rows: list[int]) -> None:
        kept = set(rows)
        for i, job in enumerate(self._batch.jobs):
            if i not in kept:
                self._admitted.discard(job)
        if not rows:
            self._batch = None
        else:
            self._batch.keep(rows)

    def _fail_all(self, error: BaseException) -> None:
        jobs = list(self._prefilling) + (self._batch.jobs if self._batch else [])
        with self._cond:
            jobs += list(self._waiting)
            self._waiting.clear()
        self._prefilling.clear()
        self._admitted.clear()
        self._batch = None
        for job in jobs:
            job.emit(error)
