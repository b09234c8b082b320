"""Rounds on the tiny model against a real SQLite database: the version, manifest, lineage and metrics a round
leaves; round 2's teacher is round 1's version (or a fresh start with train_from=base); nothing to learn; bad
demonstrations skipped; a failed round and a corrupted parent leave no version behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from learner.adapters import AdapterCorrupt, adapter_checksum, read_manifest
from learner.config import LearnerConfig
from learner.prompts import Example, build_prompt
from learner.rounds import RoundFailed, run_round
from learner.session import TEACHER, completion_logits
from learner.training import train
from storage import review, rounds, versions
from storage.demonstrations import count_fresh, create_demonstration, list_unlearned
from storage.errors import ApprenticeError


def cfg(**kw) -> LearnerConfig:
    base = {"autocast": False, "steps": 2, "batch_size": 2, "micro_batch_size": 2, "max_new_tokens": 8, "device": "cpu"}
    return LearnerConfig(**{**base, **kw})


def add_demos(engine, n: int, start: int = 0, **kw) -> list[int]:
    ids = []
    for i in range(start, start + n):
        messages = [{"role": "user", "content": f"What is the capital of Land{i}?"}]
        demo = create_demonstration(
            engine, messages=messages, corrected_answer=f"The capital of Land{i} is City{i}.", status="approved", **kw
        )
        ids.append(demo.id)
    return ids


def test_a_round_writes_version_manifest_lineage_and_metrics(engine, tiny_model_dir, tmp_path):
    ids = add_demos(engine, 3)
    config = cfg()
    seen = []
    outcome = run_round(
        engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=config, on_step=lambda r, p: seen.append(p)
    )
    assert outcome.status == "succeeded" and outcome.version == "v1" and outcome.parent == "v0"
    assert seen == [0.5, 1.0]
    folder = tmp_path / "versions" / "v1"
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
    assert not [p for p in (tmp_path / "versions").iterdir() if p.name.startswith(".tmp")]
    manifest = read_manifest(folder)
    version = versions.get_version(engine, name="v1")
    assert manifest["checksum"] == adapter_checksum(folder) == version.checksum
    assert manifest["parent"] == "v0" and manifest["demonstrations"] == ids and manifest["method"] == "sdft"
    assert manifest["hyperparameters"] == config.to_dict() and manifest["metrics"]["steps"] == 2
    assert manifest["lora"]["r"] == 16 and manifest["lora"]["target_modules"] == sorted(config.lora_targets)
    assert version.status == "candidate" and version.parent == "v0" and version.adapter_path == str(folder)
    rnd = rounds.get_round(engine, round_id=version.round_id)
    assert (rnd.status, rnd.version, rnd.progress, rnd.parent_version) == ("succeeded", "v1", 1.0, "v0")
    assert [s["step"] for s in rnd.steps] == [1, 2]
    for step in rnd.steps:
        assert {"loss", "kl", "grad_norm", "tokens", "seconds", "generation_s", "teacher_s", "student_s"} <= set(step)
    assert rnd.metrics["demonstrations"] == 3 and rnd.metrics["seconds"] > 0
    lineage = rounds.round_demonstrations(engine, round_id=rnd.id)
    assert [(r.demonstration_id, r.replay) for r in lineage] == [(i, False) for i in ids]
    # the candidate is not live: v0 has still not learned them; once v1 is live there is nothing left to learn
    assert len(list_unlearned(engine, version="v0")) == 3
    versions.set_active(engine, name="v1")
    again = run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=config)
    assert again.status == "nothing" and "nothing to learn" in again.message
    assert len(rounds.list_rounds(engine)) == 1


def test_an_edited_correction_is_learned_again(engine, tiny_model_dir, tmp_path):
    ids = add_demos(engine, 2)
    first = run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=cfg(), activate=True)
    assert first.status == "succeeded" and count_fresh(engine) == 0
    review.edit(engine, demo_id=ids[0], corrected_answer="The capital of Land0 is City0.", skill="geo")  # same text
    assert count_fresh(engine) == 0 and list_unlearned(engine, version=first.version) == []
    review.edit(engine, demo_id=ids[1], corrected_answer="The capital of Land1 is Quellmar.")
    assert count_fresh(engine) == 1 and [d.id for d in list_unlearned(engine, version=first.version)] == [ids[1]]
    second = run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=cfg(), activate=True)
    assert second.status == "succeeded" and second.parent == first.version
    lineage = rounds.round_demonstrations(engine, round_id=versions.get_version(engine, name=second.version).round_id)
    assert [(r.demonstration_id, r.answer) for r in lineage] == [(ids[1], "The capital of Land1 is Quellmar.")]
    assert count_fresh(engine) == 0


def test_nothing_to_learn_leaves_no_round_and_no_version(engine, tiny_model_dir, tmp_path):
    outcome = run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=cfg())
    assert outcome.status == "nothing" and outcome.round_id is None
    assert rounds.list_rounds(engine) == [] and [v.name for v in versions.list_versions(engine)] == ["v0"]


def teacher_logprobs(session, prompt, completion):
    with torch.no_grad(), session.adapter(TEACHER):
        logits = completion_logits(session, [prompt.teacher_ids], [completion])
    return logits.float().log_softmax(-1)


def test_round_two_teacher_is_round_one_version(engine, tiny_model_dir, tmp_path):
    from peft import PeftModel

    from learner.model_files import load_model

    add_demos(engine, 2)
    first = run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, activate=True,
                      config=cfg(method="sft", steps=3, learning_rate=5e-2))  # fmt: skip
    v1 = versions.active_version(engine)
    assert v1.name == first.version
    # round 2's teacher (as run_round builds it: the live adapter) against v1 loaded on its own, and against v0
    example = Example([{"role": "user", "content": "What is the capital of Land0?"}], "The capital is City0.", 99)
    result = train(tiny_model_dir, [example], cfg(steps=1, learning_rate=5e-2), parent_adapter=v1.adapter_path)
    prompt = build_prompt(result.session.tokenizer, example.messages, example.answer, result.session.config)
    completion = prompt.answer_ids
    got = teacher_logprobs(result.session, prompt, completion)
    base, _ = load_model(tiny_model_dir)
    ids = torch.tensor([prompt.teacher_ids + completion])
    width = len(prompt.teacher_ids)
    with torch.no_grad():
        v0_logits = base(input_ids=ids).logits[0, width - 1 : -1]
        v1_logits = PeftModel.from_pretrained(base, v1.adapter_path)(input_ids=ids).logits[0, width - 1 : -1]
    assert torch.allclose(got[0], v1_logits.log_softmax(-1), atol=1e-4), "the teacher is not the live version"
    assert not torch.allclose(got[0], v0_logits.log_softmax(-1), atol=1e-2), "round 1 did not change the model"
    # ... still after the student trained a step (frozen), and round 2 through run_round starts from v1
    add_demos(engine, 1, start=2)
    second = run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=cfg(steps=1, replay_fraction=1.0))
    assert second.parent == v1.name and read_manifest(tmp_path / "versions" / second.version)["parent"] == v1.name
    lineage = rounds.round_demonstrations(engine, round_id=second.round_id)
    assert sorted(r.replay for r in lineage) == [False, True]  # the new one, and one of round 1's replayed


def test_a_round_from_the_base_trains_a_fresh_adapter_on_everything_the_live_version_learned(
    engine, tiny_model_dir, tmp_path
):
    from safetensors.torch import load_file

    first_ids = add_demos(engine, 2)
    first = run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, activate=True,
                      config=cfg(method="sft", steps=3, learning_rate=5e-2))  # fmt: skip
    trained = load_file(tmp_path / "versions" / first.version / "adapter_model.safetensors")
    assert any(t.abs().max() > 1e-3 for n, t in trained.items() if "lora_B" in n)
    new_id = add_demos(engine, 1, start=2)[0]
    config = cfg(steps=1, learning_rate=1e-9, train_from="base")
    second = run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=config)
    assert second.parent == first.version  # the lineage goes on: the new version has learned all three
    lineage = rounds.round_demonstrations(engine, round_id=second.round_id)
    assert sorted((r.demonstration_id, r.replay) for r in lineage) == [(i, True) for i in first_ids] + [(new_id, False)]
    fresh = load_file(tmp_path / "versions" / second.version / "adapter_model.safetensors")
    assert all(t.abs().max() < 1e-6 for n, t in fresh.items() if "lora_B" in n), "it continued the parent's adapter"
    with pytest.raises(ApprenticeError, match="train_from"):
        cfg(train_from="parent")


@pytest.mark.parametrize("factor", [0.0, 1.0])
def test_a_continuing_round_scales_the_parents_a_matrices_learning_rate(tiny_model_dir, tmp_path, factor):
    example = Example([{"role": "user", "content": "What is the capital of Land0?"}], "The capital is City0.", 99)
    parent = tmp_path / "parent"
    train(tiny_model_dir, [example], cfg(method="sft", steps=2, learning_rate=5e-2)).save(parent)
    config = cfg(method="sft", steps=2, learning_rate=5e-2, parent_a_lr_factor=factor)
    child = train(tiny_model_dir, [example], config, parent_adapter=str(parent))
    from safetensors.torch import load_file

    before = load_file(parent / "adapter_model.safetensors")
    after = {n: p for n, p in child.session.model.named_parameters() if ".default." in n}
    moved = {kind: [not torch.equal(p, before[n.replace(".default", "")]) for n, p in after.items() if kind in n]
             for kind in ("lora_A", "lora_B")}  # fmt: skip
    assert moved["lora_A"] and all(moved["lora_B"])
    assert all(moved["lora_A"]) if factor else not any(moved["lora_A"])
    if not factor:  # without a parent A trains at the full rate
        fresh = train(tiny_model_dir, [example], config.replace(steps=1))
        assert [g["initial_lr"] for g in fresh.session.optimizer.param_groups] == [5e-2, 5e-2]


def test_adam_eps_above_the_gradients_shrinks_a_steps_moves(tiny_model_dir):
    example = Example([{"role": "user", "content": "What is the capital of Land0?"}], "The capital is City0.", 99)

    def moves(eps: float) -> torch.Tensor:
        config = cfg(method="sft", steps=1, learning_rate=1e-2, warmup_ratio=0.0, adam_eps=eps, max_grad_norm=1.0)
        trained = train(tiny_model_dir, [example], config)
        b = [p for n, p in trained.session.student_named_parameters() if "lora_B" in n]
        return torch.cat([p.detach().flatten().abs() for p in b])  # B starts at zero: its values are the step's moves

    default, large = moves(1e-8), moves(1.0)
    assert float(default.max()) == pytest.approx(1e-2, rel=1e-3)  # Adam's first step: lr * sign(gradient)
    assert float(default.median()) > 0.9e-2  # ... for nearly every weight, however small its gradient
    assert float(large.median()) < 1e-4  # eps over every clipped gradient (norm <= 1): about lr * gradient


def test_bad_demonstrations_are_skipped_and_the_round_goes_on(engine, tiny_model_dir, tmp_path):
    good = add_demos(engine, 1)
    bad = create_demonstration(engine, messages=[{"role": "user", "content": "Tell me everything."}],
                               corrected_answer="word " * 40, status="approved")  # fmt: skip
    outcome = run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=cfg(steps=1, max_answer_tokens=20))
    assert outcome.status == "succeeded"
    assert [s["demonstration"] for s in outcome.skipped] == [bad.id] and "over the limit" in outcome.skipped[0][
        "reason"
    ]
    assert [r.demonstration_id for r in rounds.round_demonstrations(engine, round_id=outcome.round_id)] == good


def test_a_failed_round_records_its_error_and_leaves_no_version(engine, tiny_model_dir, tmp_path):
    add_demos(engine, 1)
    with pytest.raises(RoundFailed, match="training round 1 failed"):
        run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=cfg(lora_targets=["no_such_proj"]))
    rnd = rounds.get_round(engine, round_id=1)
    assert rnd.status == "failed" and "no_such_proj" in rnd.error and rnd.finished is not None
    assert [v.name for v in versions.list_versions(engine)] == ["v0"]
    assert not list((tmp_path / "versions").glob("*"))


def test_a_corrupted_parent_adapter_is_refused(engine, tiny_model_dir, tmp_path):
    add_demos(engine, 1)
    run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=cfg(steps=1), activate=True)
    weights = Path(versions.active_version(engine).adapter_path) / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    add_demos(engine, 1, start=1)
    with pytest.raises(AdapterCorrupt, match="does not match its recorded checksum"):
        run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=cfg(steps=1))
    assert len(rounds.list_rounds(engine)) == 1 and len(versions.list_versions(engine)) == 2
    assert json.loads((weights.parent / "adapter_config.json").read_text())["r"] == 16
