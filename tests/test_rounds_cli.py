"""`apprentice learn --now`: nothing to learn exits 0 without a version; with approved demonstrations it creates a
version that the promotion gate makes live or rejects (live at once with --activate, a candidate with --no-gate);
bad --set values are one-line errors."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from app.services import open_database
from app.settings import get_settings
from storage import versions
from tests.test_rounds import add_demos

FAST = ["--set", "autocast=false", "--set", "max_new_tokens=8", "--set", "batch_size=2"]


def test_learn_now_from_the_command_line(tiny_model_dir, tmp_path, capsys):
    common = ["--data-dir", str(tmp_path), "--model", tiny_model_dir]
    assert main([*common, "learn", "--now", *FAST]) == 0
    assert "nothing to learn" in capsys.readouterr().out
    engine = open_database(get_settings(data_dir=tmp_path))
    assert [v.name for v in versions.list_versions(engine)] == ["v0"]
    add_demos(engine, 2)
    assert main([*common, "learn", "--now", "--method", "sft", "--steps", "2", "--activate", "--json", *FAST]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["status"] == "succeeded" and outcome["metrics"]["steps"] == 2
    assert versions.active_version(engine).name == outcome["version"]
    assert main([*common, "learn", "--now", "--set", "lora_r=-1"]) == 1
    assert "lora_r and lora_alpha must be positive" in capsys.readouterr().err


def test_learn_now_gates_the_new_version(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """Gated rounds: one that learned nothing is rejected, one that learned is promoted (a rejection for forgetting
    is in tests/test_scheduler.py: each gate scores the general suite)."""
    from storage.probes import add_probes
    from tests.test_gate import store_scores

    common = ["--data-dir", str(tmp_path), "--model", tiny_model_dir]
    learn = [*common, "learn", "--now", "--method", "sft", "--steps", "1", *FAST]
    engine = open_database(get_settings(data_dir=tmp_path))
    unknown = [f"Qzxv{i}" for i in range(3)]  # answers a random model never says: 0% before and after training
    add_probes(engine, items=[{"skill": "geo", "messages": [{"role": "user", "content": f"Capital of Land{i}?"}],
                               "answer": a, "grader": "contains"} for i, a in enumerate(unknown)])  # fmt: skip
    add_demos(engine, 2, skill="geo")
    store_scores(engine, "v0", {"general": 0.0})  # stored and current: the gate scores v0 on geo only
    monkeypatch.setenv("APPRENTICE_GATE_MIN_PROBES", "1000")  # the deployment's setting reaches the gate

    assert main([*learn, "--set", "learning_rate=1e-9", "--json"]) == 0  # a round that learned nothing
    outcome = json.loads(capsys.readouterr().out)
    assert not outcome["gate"]["promoted"] and "learned nothing from its round" in outcome["gate"]["reason"]
    assert versions.get_version(engine, name="v1").status == "rejected" and versions.active_version(engine).name == "v0"

    assert main([*learn, "--set", "learning_rate=0.05", "--json"]) == 0  # learned; the trained skill kept its 0%
    outcome = json.loads(capsys.readouterr().out)
    gate = outcome["gate"]
    assert gate["promoted"] and gate["reason"].startswith("promoted: "), gate
    assert "correction log-prob per token" in gate["reason"]
    assert {c["skill"]: c["rule"] for c in gate["checks"]} == {"general": "too-few-probes", "geo": "trained"}
    assert gate["checks"][1]["live"] == gate["checks"][1]["candidate"] == {"score": 0.0, "n": 3}  # both scored
    assert versions.active_version(engine).name == outcome["version"] == "v2"

    add_demos(engine, 2, start=2, skill="geo")
    assert main([*learn, "--no-gate"]) == 0
    out = capsys.readouterr().out
    assert "round 3 succeeded: version v3 (candidate)" in out and "gate:" not in out
    assert f"its steps for TensorBoard: tensorboard --logdir {tmp_path / 'tensorboard'} (run round-3)" in out
    assert (
        versions.get_version(engine, name="v3").status == "candidate" and versions.active_version(engine).name == "v2"
    )
    with pytest.raises(SystemExit):  # one or the other
        main([*learn, "--no-gate", "--activate"])
    assert "not allowed with argument" in capsys.readouterr().err
