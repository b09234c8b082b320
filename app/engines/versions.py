"""The versions an engine holds, for both engines: which are loaded (with the engine's handle for each: a peft
adapter key, a vLLM LoRA name), which one is active, how many replies stream from each, and which retire.

A version that is replaced (or unloaded while replies stream from it) retires: it serves what it started, takes no
new request, and goes when its last reply ends. The table only keeps the books; the engine attaches and detaches:

    table = VersionTable(base_handle="base")
    if not table.reuse("v3", path):             # already loaded from that folder: nothing to attach
        table.add("v3", attach(path), path)
    old = table.set_active("v3")
    detach_now = table.retire(old)              # the handle to detach now, or None: `release` hands it over later
    name, handle = table.acquire(None)          # a reply starts on the active version
    ...
    if (handle := table.release(name)) is not None:
        detach(handle)                          # the last reply of a retiring version ended

Thread-safe: every method holds the table's lock briefly and never calls out. Tested in tests/test_engine_versions.py.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Hashable

from app.engines.base import BASE_VERSION
from storage.errors import Conflict, NotFound


class VersionTable:
    def __init__(self, base_handle: Hashable) -> None:
        self._loaded: dict[str, tuple[Hashable, str | None]] = {BASE_VERSION: (base_handle, None)}  # handle, folder
        self._active = BASE_VERSION
        self._inflight: collections.Counter[str] = collections.Counter()
        self._retiring: set[str] = set()
        self._lock = threading.Lock()

    @property
    def active(self) -> str:
        return self._active

    def loaded(self) -> list[str]:
        """The versions that take requests (retiring ones left out)."""
        with self._lock:
            return [name for name in self._loaded if name not in self._retiring]

    def retiring(self) -> list[str]:
        with self._lock:
            return sorted(self._retiring)

    def in_flight(self, name: str) -> int:
        with self._lock:
            return self._inflight[name]

    def reuse(self, name: str, path: str | None) -> bool:
        """True when `name` is held already (from `path`: a retiring one takes requests again); Conflict when it is
        held from another folder; False when the engine must attach it."""
        with self._lock:
            if name not in self._loaded:
                return False
            if self._loaded[name][1] != path:
                raise Conflict(f"version {name!r} is loaded from another folder; give a new version a new name")
            self._retiring.discard(name)
            return True

    def add(self, name: str, handle: Hashable, path: str | None) -> None:
        with self._lock:
            self._loaded[name] = (handle, path)

    def check_unload(self, name: str) -> None:
        """Refuse to unload the base model, a version not held, or the active one."""
        with self._lock:
            if name == BASE_VERSION:
                raise Conflict(f"{BASE_VERSION} is the base model and cannot be unloaded")
            if name not in self._loaded or name in self._retiring:
                raise NotFound(f"model version {name!r} is not loaded")
            if name == self._active:
                raise Conflict(f"version {name!r} is active; activate another version before unloading it")

    def set_active(self, name: str) -> str:
        """Make a held version the active one; returns the one active before."""
        with self._lock:
            if name not in self._loaded:
                raise NotFound(f"model version {name!r} is not loaded")
            old, self._active = self._active, name
            self._retiring.discard(name)
            return old

    def retire(self, name: str) -> Hashable | None:
        """Take `name` out of service: its handle to detach now, or None while replies stream from it (the last
        `release` hands the handle over). The base model and the active version are never retired."""
        with self._lock:
            if name in (BASE_VERSION, self._active) or name not in self._loaded:
                return None
            if self._inflight[name] > 0:
                self._retiring.add(name)
                return None
            self._retiring.discard(name)
            return self._loaded.pop(name)[0]

    def acquire(self, version: str | None) -> tuple[str, Hashable]:
        """A reply starts on `version` (None: the active one): (its name, its handle)."""
        with self._lock:
            name = version or self._active
            if name not in self._loaded or name in self._retiring:
                loaded = ", ".join(n for n in self._loaded if n not in self._retiring)
                raise NotFound(f"model version {name!r} is not loaded (loaded: {loaded})")
            self._inflight[name] += 1
            return name, self._loaded[name][0]

    def release(self, name: str) -> Hashable | None:
        """A reply on `name` ended: the handle to detach when it was the last reply of a retiring version."""
        with self._lock:
            self._inflight[name] -= 1
            if self._inflight[name] > 0:
                return None
            del self._inflight[name]
            if name not in self._retiring:
                return None
            self._retiring.discard(name)
            return self._loaded.pop(name)[0]
