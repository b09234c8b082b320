"""The docs stay true to the code: every setting (app/settings.py) and every LearnerConfig field is on
docs/settings.md (regenerate it with `python scripts/settings_doc.py`), every `APPRENTICE_*` variable the README or
the docs name is a real setting, and every relative link and picture in them points at a file that exists."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from app.settings import Settings
from learner.config import LearnerConfig

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SETTINGS_PAGE = (ROOT / "docs" / "settings.md").read_text()
NOT_SETTINGS = {"APPRENTICE_"}  # the prefix itself, named in prose


def env_names() -> set[str]:
    out = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        out.add(alias if isinstance(alias, str) else f"APPRENTICE_{name.upper()}")
    return out


@pytest.mark.parametrize("variable", sorted(env_names()))
def test_every_setting_is_documented(variable):
    assert f"`{variable}`" in SETTINGS_PAGE, f"{variable} is missing from docs/settings.md: run scripts/settings_doc.py"


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(LearnerConfig)])
def test_every_learner_field_is_documented(name):
    assert f"| `{name}` |" in SETTINGS_PAGE, f"{name} is missing from docs/settings.md: run scripts/settings_doc.py"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_variables_exist(page):
    named = set(re.findall(r"\bAPPRENTICE_[A-Z_]+\b", page.read_text())) - NOT_SETTINGS
    unknown = sorted(named - env_names())
    assert not unknown, f"{page.name} names settings that do not exist: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_pictures_exist(page):
    targets = re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", page.read_text())
    missing = [t for t in targets if "://" not in t and not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to files that do not exist: {missing}"
