"""Write docs/settings.md from the code: every `Settings` field (app/settings.py) with its environment variable,
default and description, and every `LearnerConfig` field (learner/config.py) with its default and the presets'
values. tests/test_docs.py fails when a setting or a field is missing from that page. Run from the repository root:

    .venv/bin/python scripts/settings_doc.py
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from app.settings import Settings
from learner.config import PRESETS, LearnerConfig

OUT = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def env_name(name: str, field: object) -> str:
    alias = getattr(field, "validation_alias", None)
    return alias if isinstance(alias, str) else f"APPRENTICE_{name.upper()}"


def cell(value: object) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return "`" + text.replace("|", "\\|") + "`" if text != "" else "(empty)"


def settings_rows() -> list[str]:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if name == "admin_password":
            default = ""
        if name == "model_cache":
            default = "~/.cache/apprentice/models"
        if name == "data_dir":
            default = "./data"
        rows.append(f"| `{env_name(name, field)}` | {cell(default)} | {field.description or ''} |")
    return rows


def learner_rows() -> list[str]:
    presets = [p for p in PRESETS if PRESETS[p]]
    rows = ["| field | default | " + " | ".join(f"`{p}`" for p in presets) + " | meaning |"]
    rows.append("|---" * (3 + len(presets)) + "|")
    for f in dataclasses.fields(LearnerConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        values = " | ".join(cell(PRESETS[p][f.name]) if f.name in PRESETS[p] else "" for p in presets)
        rows.append(f"| `{f.name}` | {cell(default)} | {values} | {f.metadata['help'].replace('|', '/')} |")
    return rows


def page() -> str:
    return "\n".join(
        [
            "# Settings",
            "",
            "Generated from the code by `scripts/settings_doc.py`; `tests/test_docs.py` fails when a setting or a",
            "LearnerConfig field is missing here.",
            "",
            "## Server and application settings",
            "",
            "Flags first (`apprentice --help`, `apprentice serve --help`), then these environment variables, then the",
            "defaults. `learn_config` is JSON (`APPRENTICE_LEARN_CONFIG='{\"learning_rate\": 1e-4}'`).",
            "",
            *settings_rows(),
            "",
            "## LearnerConfig",
            "",
            "What one learning round does (`learner/config.py`). A round uses the preset of its model (`builtin`",
            "for the built-in model, else `paper`, or `APPRENTICE_LEARN_PRESET`), then `APPRENTICE_LEARN_CONFIG`,",
            "then `apprentice learn --set FIELD=VALUE`. The preset columns show only what a preset changes; `paper`",
            "is the defaults. `apprentice learn --config` prints the effective values.",
            "",
            *learner_rows(),
            "",
        ]
    )


if __name__ == "__main__":
    OUT.write_text(page())
    print(f"wrote {OUT}")
