"""Which version serves: the database decides, every running server follows.

`activate_version(db, name)` is all `apprentice activate NAME` (and a learner's promotion) needs to do: mark the
version active in the database. A server reads the active version at start (`sync_engine`) and then every
`version_poll_seconds` (`follow_database`), and hot-swaps its engine when it changed; so the command line, the
learner and other processes never talk to the server directly. A version whose adapter cannot be loaded is logged
once and the server keeps serving what it served.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine as Database

from app.state import AppState
from storage import versions
from storage.errors import ApprenticeError
from storage.models import ModelVersion

log = logging.getLogger(__name__)


def activate_version(db: Database, name: str) -> tuple[ModelVersion, ModelVersion]:
    """Mark `name` active (the one before retired); returns (new, previous). Refuses a version whose adapter
    folder is gone, so a server never gets asked to swap to nothing."""
    target = versions.get_version(db, name=name)
    if target.adapter_path is not None and not (Path(target.adapter_path) / "adapter_config.json").is_file():
        raise ApprenticeError(f"version {name}'s adapter folder {target.adapter_path} is missing or incomplete")
    previous = versions.active_version(db)
    return versions.set_active(db, name=name), previous


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


async def activate(state: AppState, name: str) -> dict[str, Any]:
    """Make `name` the live version (promote a candidate, or roll back to an earlier one): its adapter is verified
    against its checksum, the database's active version changes (follow_database: every server polling it
    follows), and this server's engine swaps at once. If the engine cannot load it, the previous version is made
    active again and the error is raised."""
    from learner.adapters import verify_adapter

    target = await asyncio.to_thread(versions.get_version, state.db, name=name)
    if target.adapter_path is not None:
        await asyncio.to_thread(verify_adapter, target.adapter_path, target.checksum)
    _, previous = await asyncio.to_thread(activate_version, state.db, name)
    try:
        await sync_engine(state)
    except BaseException:
        if previous.name != name:
            await asyncio.to_thread(activate_version, state.db, previous.name)
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
