"""`apprentice versions prune`: delete the adapter folders storage.pruning picks (its docstring has the rules), and
only folders inside the data directory's versions/ (an adapter registered from elsewhere with `versions add` is the
user's own and stays)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from sqlalchemy import Engine as Database

from storage.pruning import mark_pruned, plan_prune


def prune_versions(db: Database, versions_dir: Path, *, keep: int, min_age_hours: float, dry_run: bool) -> list[str]:
    """Remove what the plan allows; one line per version acted on or spared, and a summary line last."""
    plan = plan_prune(db, keep=keep, min_age=dt.timedelta(hours=min_age_hours))
    root = versions_dir.resolve()
    lines, removed = [], 0
    for p in plan.remove:
        folder = Path(p.adapter_path).resolve()
        if not folder.is_relative_to(root) or folder == root:
            lines.append(f"kept {p.name}: {p.why}, but its folder {folder} is not under {root}")
            continue
        if not folder.exists():
            lines.append(f"skipped {p.name}: {p.why}; its folder {folder} is already gone")
            continue
        if dry_run:
            lines.append(f"would remove {p.name} ({p.why}): {folder}")
            removed += 1
            continue
        if not mark_pruned(db, name=p.name):
            lines.append(f"kept {p.name}: it went live since the plan was made")
            continue
        shutil.rmtree(folder)
        lines.append(f"removed {p.name} ({p.why}): {folder}")
        removed += 1
    lines.extend(f"kept {name}: {why}" for name, why in plan.kept)
    verb = "would remove" if dry_run else "removed"
    lines.append(f"{verb} {removed} folder(s); the live version, its ancestors and every version that was live stay")
    return lines
