"""Which version serves: the database decides, every running server follows.

`activate(db, name)` is all `apprentice activate NAME` (and a learner's promotion) needs to do: check the version's
adapter (one rule for every path) and mark it active in the database; `go_live(state, name)` also swaps this
server's engine at once (the admin tabs and API). A server reads the active version at start (`sync_engine`) and
then every `version_poll_seconds` (`follow_database`), and hot-swaps its engine when it changed; so the command line,
the learner and other processes never talk to the server directly. A version whose adapter cannot be loaded is logged
once and the server keeps serving what it served.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine as Database

from app.state import AppState
from learner.adapters import adapter_checksum, check_version_adapter
from storage import versions
from storage.errors import ApprenticeError
from storage.models import ModelVersion

log = logging.getLogger(__name__)


def activate(db: Database, name: str) -> tuple[ModelVersion, ModelVersion]:
    """Mark `name` active (the one before retired); returns (new, previous). The one rule for every way a version
    goes live (`apprentice activate`, the admin tabs, the admin API, the gate after a round): its adapter must be
    there and match the checksum recorded when it was registered (learner.adapters.check_version_adapter), so a
    server is never asked to swap to a missing or tampered adapter."""
    target = versions.get_version(db, name=name)
    check_version_adapter(name, target.adapter_path, target.checksum)
    previous = versions.active_version(db)
    return versions.set_active(db, name=name), previous


def register(
    db: Database, name: str, adapter: str | Path, *, parent: str | None = None, reason: str = ""
) -> ModelVersion:
    """Register a LoRA adapter folder as a candidate version, with the checksum of its files as they are now (what
    `activate` checks it against later). The parent defaults to the active version."""
    folder = Path(adapter).resolve()
    if not (folder / "adapter_config.json").is_file():
        raise ApprenticeError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json in it)")
    parent = parent or versions.active_version(db).name
    return versions.create_version(
        db, name=name, adapter_path=str(folder), parent=parent, checksum=adapter_checksum(folder), reason=reason
    )


async def sync_engine(state: AppState) -> bool:
    """Swap the engine to the database's active version if it differs; True when it swapped."""
    target = await asyncio.to_thread(versions.active_version, state.db)
    if target.name == state.engine.active:
        return False
    await state.engine.activate(target.name, target.adapter_path)
    log.info("now serving version %s", target.name)
    return True


async def follow_database(state: AppState, interval: float) -> None:
    """Run until cancelled: poll the active version and hot-swap to it."""
    failed: tuple[str, str | None] | None = None
    while True:
        await asyncio.sleep(interval)
        try:
            target = await asyncio.to_thread(versions.active_version, state.db)
        except Exception:  # keep following; a transient database error must not stop hot swaps for good
            log.exception("reading the active version failed")
            continue
        if target.name == state.engine.active or (target.name, target.adapter_path) == failed:
            continue
        try:
            await state.engine.activate(target.name, target.adapter_path)
            log.info("now serving version %s", target.name)
        except Exception as e:
            failed = (target.name, target.adapter_path)
            log.error("cannot serve version %s (still serving %s): %s", target.name, state.engine.active, e)


async def go_live(state: AppState, name: str) -> dict[str, Any]:
    """`activate` and this server's hot swap at once (promote a candidate, or roll back to an earlier one). If the
    engine cannot load it, the version live before is made active again and the error is raised."""
    _, previous = await asyncio.to_thread(activate, state.db, name)
    try:
        await sync_engine(state)
    except BaseException:
        if previous.name != name:
            await asyncio.to_thread(versions.set_active, state.db, name=previous.name)
        raise
    return {"active": name, "previous": previous.name}


def previous_live(db: Database) -> str:
    """The version that was live before the current one (the most recently activated other accepted version)."""
    live = versions.active_version(db)
    earlier = [v for v in versions.list_versions(db) if v.status == "retired" and v.activated is not None]
    earlier = [v for v in earlier if v.name != live.name]
    if not earlier:
        raise ApprenticeError(f"{live.name} is the only version that was ever live: nothing to roll back to")
    return max(earlier, key=lambda v: (v.activated, v.id)).name
