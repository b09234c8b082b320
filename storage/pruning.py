"""Which versions' adapter folders `apprentice versions prune` may delete: rejected candidates, and candidates
superseded by a version that went live after them. Never:

- the live version or any of its ancestors;
- a version that was ever live: servers load on their own only the live version (and, during a hot swap, the one
  before it), so a server that has not polled yet may still be serving it, and a rollback needs it;
- a version made less than `min_age` ago: an admin's Compare (or a gate) may be loading it right now;
- the `keep` newest of those that qualify.

Servers do not record what they have loaded beyond this (a version loaded by hand through /v1/load_lora_adapter is
not tracked); a loaded adapter's weights are in memory, so deleting its folder only stops it being loaded again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, select

from storage.db import reading, transaction
from storage.models import ModelVersion, utcnow

PRUNED_NOTE = "adapter folder removed by `apprentice versions prune`"


@dataclass(frozen=True)
class Prunable:
    name: str
    status: str
    adapter_path: str
    why: str  # rejected, or superseded by <version>


@dataclass(frozen=True)
class PrunePlan:
    remove: list[Prunable]
    kept: list[tuple[str, str]]  # (version, why it stays) for the rejected and superseded ones left alone


def _lineage(rows: dict[str, ModelVersion], name: str) -> set[str]:
    seen: set[str] = set()
    while name and name in rows and name not in seen:
        seen.add(name)
        name = rows[name].parent or ""
    return seen


def plan_prune(db: Engine, *, keep: int = 0, min_age: dt.timedelta = dt.timedelta(hours=1)) -> PrunePlan:
    with reading(db) as s:
        ordered = list(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))
    rows = {v.name: v for v in ordered}
    active = next((v.name for v in ordered if v.status == "active"), "")
    protected = _lineage(rows, active)
    now = utcnow()
    qualifying: list[Prunable] = []
    kept: list[tuple[str, str]] = []
    for v in ordered:
        if v.adapter_path is None or PRUNED_NOTE in v.reason or v.status not in ("rejected", "candidate"):
            continue
        later_live = [w.name for w in ordered if w.id > v.id and w.activated is not None]
        if v.status == "candidate" and not later_live:
            continue  # still waiting for a decision
        why = "rejected" if v.status == "rejected" else f"superseded by {later_live[-1]}"
        if v.name in protected:
            kept.append((v.name, f"{why}, but an ancestor of the live version {active}"))
        elif v.activated is not None:
            kept.append((v.name, f"{why}, but it was live once (a server may still hold it; rollback needs it)"))
        elif now - v.created < min_age:
            kept.append((v.name, f"{why}, but made less than {min_age} ago"))
        else:
            qualifying.append(Prunable(v.name, v.status, v.adapter_path, why))
    keep = max(0, keep)
    newest = qualifying[len(qualifying) - keep :] if keep else []
    kept.extend((p.name, f"{p.why}, but among the {keep} newest kept (--keep)") for p in newest)
    return PrunePlan(remove=qualifying[: len(qualifying) - len(newest)], kept=kept)


def mark_pruned(db: Engine, *, name: str) -> bool:
    """Note on the version that its folder is being removed, if it was still never live (checked under the row's
    lock, so an activation since the plan wins); False leaves it alone. Activation refuses it once the folder is
    gone."""
    with transaction(db) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.name == name).with_for_update())
        if version is None or version.activated is not None or version.status == "active":
            return False
        if PRUNED_NOTE not in version.reason:
            version.reason = f"{version.reason}; {PRUNED_NOTE}" if version.reason else PRUNED_NOTE
        return True
