"""A round's TensorBoard files, read back with tensorboard's own EventAccumulator: a round on the tiny model writes
every optimizer step it records in the database to <data dir>/tensorboard/round-<id>/ as it trains (loss, KL,
gradient norm, step time, ...), and the gate's scores join the run once the gate has decided
(app/services/learning.finish_round). Files an earlier round of the same number left are replaced."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from app.services.learning import finish_round
from learner.evaluate import EvalConfig
from learner.gate import GateConfig
from learner.rounds import run_round
from learner.tensorboard_events import RoundEvents, run_folder
from storage import rounds
from storage.probes import add_probes
from tests.test_rounds import add_demos, cfg

STEP_TAGS = {"train/loss": "loss", "train/kl": "kl", "train/grad_norm": "grad_norm", "train/lr": "lr",
             "time/step_s": "seconds", "time/generation_s": "generation_s", "time/student_s": "student_s"}  # fmt: skip


def read(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def series(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.mark.parametrize("backend", ["sqlite"])  # the event files are the point: one backend
def test_a_round_and_its_gate_write_tensorboard_events(engine, tiny_model_dir, tmp_path):
    add_demos(engine, 2, skill="geo")
    probes = [{"skill": "geo", "messages": [{"role": "user", "content": f"What is the capital of Land{i}?"}],
               "answer": f"City{i}", "grader": "contains"} for i in range(2)]  # fmt: skip
    add_probes(engine, items=probes)
    stale = RoundEvents(tmp_path, 1)  # a round 1 of an earlier database, in the same data directory
    stale.write({"train/loss": 9.0}, 99)
    stale.close()
    live_steps = []

    def on_step(record, progress):  # written as it trains: TensorBoard shows a running round
        live_steps.append(len(read(run_folder(tmp_path, 1)).Scalars("train/loss")))

    outcome = run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=cfg(steps=3), on_step=on_step)
    assert outcome.status == "succeeded" and outcome.round_id == 1 and live_steps == [1, 2, 3]
    folder = run_folder(tmp_path, 1)
    assert folder == tmp_path / "tensorboard" / "round-1" and any(folder.glob("events.out.tfevents.*"))
    stored = rounds.get_round(engine, round_id=1).steps
    events = read(folder)
    assert set(STEP_TAGS) <= set(events.Tags()["scalars"]), events.Tags()["scalars"]
    for tag, key in STEP_TAGS.items():
        got = series(events, tag)
        assert [step for step, _ in got] == [1, 2, 3], tag  # the stale step 99 is gone
        assert [v for _, v in got] == pytest.approx([s[key] for s in stored], rel=1e-5), tag
    assert not [t for t in events.Tags()["scalars"] if t.startswith("gate/")]

    result = finish_round(engine, outcome, model_folder=tiny_model_dir, gate_config=GateConfig(min_probes=1),
                          eval_config=EvalConfig(batch_size=2, max_new_tokens=8, general_suite=None),
                          data_dir=tmp_path)  # fmt: skip
    assert result.gate is not None, result
    events = read(folder)
    assert series(events, "gate/promoted") == [(3, 1.0 if result.gate.promote else 0.0)]
    (check,) = result.gate.checks
    assert check.skill == "geo"
    assert series(events, "gate/geo/candidate") == [(3, pytest.approx(check.candidate.score))]
    assert series(events, "gate/geo/live") == [(3, pytest.approx(check.live.score))]
    assert [step for step, _ in series(events, "train/loss")] == [1, 2, 3]  # the gate added to the run, kept it
