"""A data-parallel round: `train_parallel(..., nproc=N)` spawns N processes (gloo on CPU, NCCL with one GPU each).
Every one reads the same seeded batches and takes its share of each (learner.training.shard): it samples the
rollouts of its prompts, runs their passes, and divides its loss by the whole batch's count (Session.total), so the
gradients summed over the ranks are the one-process gradient of the same global batch. Rank 0 sends each step's
record to the calling process (which writes it to the database and checks the lease) and writes the adapter; the
caller copies it into the version folder. Rounds smaller than N prompts per batch use fewer processes.

    result = train_parallel(model_dir, examples, config, nproc=2)   # apprentice learn --now --nproc 2
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learner.config import LearnerConfig
from learner.prompts import Example, build_prompts
from learner.session import TrainingStopped, all_sum
from learner.training import _tokenizer, _train, train
from storage.errors import ApprenticeError


@dataclass
class ParallelResult:
    steps: list[dict[str, Any]]
    metrics: dict[str, Any]
    skipped: list[tuple[int | None, str]]
    used: list[int | None]
    lora: dict[str, Any]
    adapter_dir: Path

    def save(self, out_dir: Path) -> None:
        shutil.copytree(self.adapter_dir, out_dir, dirs_exist_ok=True)


def world_size(config: LearnerConfig, n_prompts: int, nproc: int) -> int:
    """Processes that each get at least one prompt of every batch (and of every anchor batch)."""
    size = min(config.batch_size, n_prompts)
    if config.anchor_weight > 0:
        size = min(size, config.anchor_batch_size)
    return max(1, min(nproc, size))


def train_parallel(
    model_dir: str,
    examples: list[Example],
    config: LearnerConfig,
    *,
    nproc: int,
    parent_adapter: str | None = None,
    on_step: Callable[[dict[str, Any], float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Any:
    """learner.training.train in `nproc` processes (fewer when the batches are smaller): a ParallelResult, or
    train's own result when one process is enough."""
    import multiprocessing as mp

    prompts, _ = build_prompts(_tokenizer(model_dir), examples, config)
    world = world_size(config, len(prompts), nproc)
    if world == 1:
        return train(model_dir, examples, config, parent_adapter=parent_adapter, on_step=on_step,
                     should_stop=should_stop)  # fmt: skip
    ctx = mp.get_context("spawn")
    messages, stop = ctx.Queue(), ctx.Event()
    out = Path(tempfile.mkdtemp(prefix="apprentice-dp-"))
    address = ("127.0.0.1", _free_port())
    args = (world, address, model_dir, examples, config, parent_adapter, out, messages, stop)
    procs = [ctx.Process(target=_rank_main, args=(rank, *args), daemon=True) for rank in range(world)]
    for p in procs:
        p.start()
    try:
        done = _follow(procs, messages, stop, on_step, should_stop)
    except BaseException:
        stop.set()
        _end(procs)
        shutil.rmtree(out, ignore_errors=True)
        raise
    _end(procs)
    if done[0] == "stopped":
        shutil.rmtree(out, ignore_errors=True)
        raise TrainingStopped(done[1])
    _, steps, metrics, skipped, used, lora = done
    return ParallelResult(steps, {**metrics, "processes": world}, skipped, used, lora, out / "adapter")


def _follow(procs: list[Any], messages: Any, stop: Any, on_step: Any, should_stop: Any) -> tuple:
    """Relay rank 0's step records to `on_step` until it reports the end; raise if a rank failed."""
    while True:
        if should_stop is not None and should_stop():
            stop.set()
        try:
            kind, *payload = messages.get(timeout=0.5)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead or all(p.exitcode == 0 for p in procs):
                raise ApprenticeError(f"data-parallel training ended without a result (exit codes {dead})") from None
            continue
        if kind == "step" and on_step is not None:
            on_step(*payload)
        elif kind == "error":
            raise ApprenticeError(f"data-parallel training failed on rank {payload[0]}: {payload[1]}")
        elif kind in ("done", "stopped"):
            return (kind, *payload)


def _end(procs: list[Any]) -> None:
    deadline = time.monotonic() + 30
    for p in procs:
        p.join(timeout=max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(
    rank: int,
    world: int,
    address: tuple[str, int],
    model_dir: str,
    examples: list[Example],
    config: LearnerConfig,
    parent_adapter: str | None,
    out: Path,
    messages: Any,
    stop: Any,
) -> None:
    import torch
    import torch.distributed as dist

    cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        config = LearnerConfig(**{**config.to_dict(), "device": str(device)})
    else:
        torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // world))
    init = f"tcp://{address[0]}:{address[1]}"
    dist.init_process_group("nccl" if cuda else "gloo", init_method=init, rank=rank, world_size=world)
    try:

        def on_step(record: dict[str, Any], progress: float) -> None:
            if rank == 0:
                messages.put(("step", record, progress))

        def should_stop() -> bool:  # every rank stops at the same step
            return all_sum(1.0 if stop.is_set() else 0.0, device) > 0

        try:
            result = _train(model_dir, examples, config, parent_adapter, on_step, should_stop, rank, world)
        except TrainingStopped as e:
            if rank == 0:
                messages.put(("stopped", str(e)))
            return
        if rank == 0:
            result.save(out / "adapter")
            messages.put(("done", result.steps, result.metrics, result.skipped, result.used, result.lora))
    except BaseException as e:
        messages.put(("error", rank, f"{type(e).__name__}: {e}"))
        raise
    finally:
        dist.destroy_process_group()
