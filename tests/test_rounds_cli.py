"""`apprentice learn --now`: nothing to learn exits 0 without a version; with approved demonstrations it creates a
candidate version (or a live one with --activate); bad --set values are one-line errors."""

from __future__ import annotations

import json

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
