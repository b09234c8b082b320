"""TensorBoard event files of training rounds, written from the records a round stores in the database: one run per
round, `<data dir>/tensorboard/round-<id>/`, with every optimizer step (its number is the global step) and, once the
gate has decided, the gate's scores at the round's last step.

    train/loss, train/kl, train/grad_norm, train/anchor_kl, train/lr, train/tokens   per step, as the step recorded
    time/step_s, time/generation_s, time/teacher_s, time/student_s, time/anchor_s     per step, seconds
    gate/<skill>/candidate, gate/<skill>/live (0..1), gate/promoted (1 or 0)   once

    tensorboard --logdir <data dir>/tensorboard

Writing them never fails a round: an error is logged once and the round goes on without its event files.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from learner.gate import GateDecision

log = logging.getLogger(__name__)
FOLDER = "tensorboard"


def run_folder(data_dir: Path, round_id: int) -> Path:
    return Path(data_dir) / FOLDER / f"round-{round_id}"


def step_scalars(record: dict[str, Any]) -> dict[str, float]:
    """A stored step record as TensorBoard tags: seconds under time/, the rest under train/ (`step` is the x axis)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            continue
        tag = "time/step_s" if key == "seconds" else f"time/{key}" if key.endswith("_s") else f"train/{key}"
        out[tag] = float(value)
    return out


def gate_scalars(decision: GateDecision) -> dict[str, float]:
    """A learner.gate.GateDecision's scores: each skill's candidate and live score, and the verdict."""
    out: dict[str, float] = {"gate/promoted": 1.0 if decision.promote else 0.0}
    for check in decision.checks:
        for side in ("candidate", "live"):
            score = getattr(check, side)
            if score is not None:
                out[f"gate/{check.skill}/{side}"] = float(score.score)
    return out


class RoundEvents:
    """The event file of one round, written step by step (flushed each time, so TensorBoard shows a running round).
    Opening it deletes event files an earlier round of the same number left (a database started afresh)."""

    def __init__(self, data_dir: Path, round_id: int, *, fresh: bool = True) -> None:
        self.folder = run_folder(data_dir, round_id)
        self.writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            if fresh and self.folder.is_dir():
                for old in self.folder.glob("events.out.tfevents.*"):
                    old.unlink()
            self.writer = SummaryWriter(log_dir=str(self.folder))
        except Exception:
            log.warning("round %s: cannot write TensorBoard events to %s", round_id, self.folder, exc_info=True)

    def write(self, scalars: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        try:
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, global_step=step)
            self.writer.flush()
        except Exception:
            log.warning("cannot write TensorBoard events to %s; no more for this round", self.folder, exc_info=True)
            self.close()

    def step(self, record: dict[str, Any]) -> None:
        self.write(step_scalars(record), int(record.get("step", 0)))

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:
                log.warning("cannot close the TensorBoard events of %s", self.folder, exc_info=True)


def write_gate(data_dir: Path, round_id: int, decision: GateDecision, *, step: int) -> None:
    """Append the gate's scores to a round's run (a second event file in its folder), at `step`."""
    events = RoundEvents(data_dir, round_id, fresh=False)
    try:
        events.write(gate_scalars(decision), step)
    finally:
        events.close()
