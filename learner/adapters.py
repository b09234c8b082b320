"""Version directories on disk: a peft LoRA adapter plus manifest.json, written atomically, verified by checksum.

    path, checksum = write_version_dir(versions_dir, "v3", save=result.save, manifest={...})
    verify_adapter(path, checksum)      # raises AdapterCorrupt when a file changed or went missing
    check_version_adapter("v3", path, checksum)   # the rule before a version is served, trained on or scored

The checksum is the SHA-256 of the sorted (file name, file SHA-256) pairs of every file but manifest.json; the
manifest records it with the per-file hashes. A directory appears under its final name only complete and fsynced
(temp dir, fsync, rename), so a crash leaves at most a `.tmp-*` folder, which `remove_leftovers` deletes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from learner.model_files import _file_sha256, _fsync_tree
from storage.errors import ApprenticeError, Conflict

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


class AdapterCorrupt(ApprenticeError):
    status = 409


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): _file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def adapter_checksum(folder: Path) -> str:
    h = hashlib.sha256()
    for name, digest in file_hashes(folder).items():
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def verify_adapter(folder: str | Path, expected: str | None) -> None:
    """Refuse an adapter whose files do not hash to `expected` (or that is missing)."""
    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise AdapterCorrupt(f"adapter folder {folder} is missing or has no adapter_config.json")
    if not expected:
        raise AdapterCorrupt(f"adapter folder {folder} has no recorded checksum to verify it against")
    got = adapter_checksum(folder)
    if got != expected:
        raise AdapterCorrupt(
            f"adapter {folder} does not match its recorded checksum (expected {expected[:12]}..., found "
            f"{got[:12]}...); its files were changed or damaged since it was registered"
        )


def check_version_adapter(name: str, folder: str | Path | None, checksum: str | None) -> None:
    """The one rule before a version goes live, is trained on or is scored: the base model (no folder) passes; an
    adapter must be there and hash to the checksum recorded when it was registered (AdapterCorrupt names the version
    otherwise). A version registered before `apprentice versions add` recorded checksums is used unverified, with a
    warning: there is nothing to check it against."""
    if folder is None:
        return
    if checksum:
        try:
            verify_adapter(folder, checksum)
        except AdapterCorrupt as e:
            raise AdapterCorrupt(f"version {name} is refused: {e}") from None
        return
    if not (Path(folder) / "adapter_config.json").is_file():
        raise AdapterCorrupt(f"version {name} is refused: its adapter folder {folder} is missing or incomplete")
    log.warning("version %s has no recorded checksum; its adapter is used unverified", name)


def write_version_dir(
    versions_dir: Path, name: str, *, save: Callable[[Path], None], manifest: dict[str, Any]
) -> tuple[Path, str]:
    """`save(tmp)` writes the adapter; add manifest.json; fsync; rename to versions_dir/name. Returns (path, sum)."""
    versions_dir.mkdir(parents=True, exist_ok=True)
    target = versions_dir / name
    if target.exists():
        raise Conflict(f"version directory {target} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=versions_dir))
    try:
        save(tmp)
        files = file_hashes(tmp)
        checksum = adapter_checksum(tmp)
        full = {**manifest, "name": name, "checksum": checksum, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2, default=str))
        _fsync_tree(tmp)
        os.rename(tmp, target)
        _fsync_tree_dir(versions_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, checksum


def _fsync_tree_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_leftovers(versions_dir: Path, names: list[str] | None = None) -> list[str]:
    """Delete `.tmp-*` folders (a write cut short) and the named folders (versions of failed rounds)."""
    removed: list[str] = []
    names = names or []
    if not versions_dir.is_dir():
        return removed
    for path in versions_dir.iterdir():
        if path.is_dir() and (path.name.startswith(".tmp-") or path.name in names):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def read_manifest(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / MANIFEST).read_text())
