"""`apprentice versions prune`: rejected and superseded candidates' folders go; the live version, its ancestors,
versions that were ever live, young ones, the --keep newest and folders outside the data directory stay."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from app.cli import main
from app.services.prune import prune_versions
from app.services.versions import activate
from storage import versions
from storage.errors import ApprenticeError
from storage.pruning import plan_prune


def folder(root: Path, name: str) -> str:
    path = root / name
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    return str(path)


def history(engine, root: Path, elsewhere: Path) -> None:
    """v1 live then parent of v4 (live now); v2 rejected; v3 a candidate superseded by v4; v5 rejected, outside the
    data directory; v6 a candidate still waiting (nothing went live after it); v7 rejected, the newest."""
    versions.create_version(engine, name="v1", adapter_path=folder(root, "v1"), parent="v0")
    versions.set_active(engine, name="v1")
    versions.create_version(engine, name="v2", adapter_path=folder(root, "v2"), parent="v1", status="rejected")
    versions.create_version(engine, name="v3", adapter_path=folder(root, "v3"), parent="v1")
    versions.create_version(engine, name="v4", adapter_path=folder(root, "v4"), parent="v1")
    versions.set_active(engine, name="v4")
    versions.create_version(engine, name="v5", adapter_path=folder(elsewhere, "v5"), parent="v4", status="rejected")
    versions.create_version(engine, name="v6", adapter_path=folder(root, "v6"), parent="v4")
    versions.create_version(engine, name="v7", adapter_path=folder(root, "v7"), parent="v4", status="rejected")


def test_plan(engine, tmp_path):
    history(engine, tmp_path / "versions", tmp_path / "mine")
    assert plan_prune(engine).remove == []  # everything is younger than an hour
    plan = plan_prune(engine, min_age=dt.timedelta(0))
    assert {p.name: p.why for p in plan.remove} == {
        "v2": "rejected", "v3": "superseded by v4", "v5": "rejected", "v7": "rejected"
    }  # fmt: skip
    kept = plan_prune(engine, keep=1, min_age=dt.timedelta(0))
    assert [p.name for p in kept.remove] == ["v2", "v3", "v5"]
    assert dict(kept.kept)["v7"] == "rejected, but among the 1 newest kept (--keep)"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_prune_removes_folders_and_the_versions_cannot_come_back(engine, tmp_path):
    root = tmp_path / "versions"
    history(engine, root, tmp_path / "mine")
    dry = prune_versions(engine, root, keep=0, min_age_hours=0, dry_run=True)
    assert dry[-1].startswith("would remove 3 folder(s)") and (root / "v2").exists()
    report = prune_versions(engine, root, keep=0, min_age_hours=0, dry_run=False)
    assert report[-1].startswith("removed 3 folder(s)")
    assert sorted(p.name for p in root.iterdir()) == ["v1", "v4", "v6"]
    assert (tmp_path / "mine" / "v5").exists() and any("v5" in line and "not under" in line for line in report)
    assert "adapter folder removed" in versions.get_version(engine, name="v3").reason
    with pytest.raises(ApprenticeError, match="missing"):
        activate(engine, "v3")
    again = prune_versions(engine, root, keep=0, min_age_hours=0, dry_run=False)
    assert again[-1].startswith("removed 0 folder(s)")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_rollback_target_stays(engine, tmp_path):
    root = tmp_path / "versions"
    history(engine, root, tmp_path / "mine")
    versions.set_active(engine, name="v0")  # rolled back to the base: v1 and v4 were live, so they stay
    prune_versions(engine, root, keep=0, min_age_hours=0, dry_run=False)
    assert sorted(p.name for p in root.iterdir()) == ["v1", "v4", "v6"]


def test_cli(tmp_path, capsys):
    root = tmp_path / "versions"
    assert main(["--data-dir", str(tmp_path), "versions"]) == 0  # a migrated database with v0
    from storage.db import make_engine

    db = make_engine(f"sqlite:///{tmp_path / 'apprentice.db'}")
    history(db, root, tmp_path / "mine")
    capsys.readouterr()
    assert main(["--data-dir", str(tmp_path), "versions", "prune", "--min-age-hours", "0", "--keep", "1"]) == 0
    out = capsys.readouterr().out
    assert "removed v2 (rejected)" in out and "kept v7: rejected, but among the 1 newest" in out
    assert main(["--data-dir", str(tmp_path), "versions", "prune", "--keep", "-1"]) == 1
    db.dispose()
