"""The engines' version table (app/engines/versions.py), without a model: loading, the active version, replies in
flight, and retiring a version that still streams until its last reply ends."""

from __future__ import annotations

import threading

import pytest

from app.engines.versions import VersionTable
from storage.errors import Conflict, NotFound


def table_with(*names: str) -> VersionTable:
    table = VersionTable(base_handle="base")
    for name in names:
        assert not table.reuse(name, f"/adapters/{name}")
        table.add(name, f"key-{name}", f"/adapters/{name}")
    return table


def test_the_base_model_is_loaded_and_active_from_the_start():
    table = VersionTable(base_handle="base")
    assert table.active == "v0" and table.loaded() == ["v0"] and table.retiring() == []
    assert table.acquire(None) == ("v0", "base")
    assert table.release("v0") is None  # the base model never goes
    with pytest.raises(Conflict, match="base model"):
        table.check_unload("v0")
    assert table.retire("v0") is None


def test_a_version_is_loaded_once_per_folder():
    table = table_with("v1")
    assert table.reuse("v1", "/adapters/v1")  # the same folder: nothing to attach
    with pytest.raises(Conflict, match="another folder"):
        table.reuse("v1", "/elsewhere/v1")
    assert table.loaded() == ["v0", "v1"]


def test_activate_then_retire_the_old_version_at_once_when_idle():
    table = table_with("v1", "v2")
    assert table.set_active("v1") == "v0"
    assert table.set_active("v2") == "v1"
    assert table.retire("v1") == "key-v1"  # no reply on it: the engine detaches it now
    assert table.loaded() == ["v0", "v2"] and table.retire("v2") is None  # the active one is never retired
    with pytest.raises(NotFound, match="'v1' is not loaded"):
        table.acquire("v1")
    with pytest.raises(NotFound):
        table.set_active("v9")


def test_a_retiring_version_finishes_its_replies_then_goes():
    table = table_with("v1", "v2")
    table.set_active("v1")
    first, second = table.acquire(None), table.acquire("v1")
    assert first == second == ("v1", "key-v1") and table.in_flight("v1") == 2
    table.set_active("v2")
    assert table.retire("v1") is None  # two replies stream from it
    assert table.retiring() == ["v1"] and table.loaded() == ["v0", "v2"]
    with pytest.raises(NotFound, match=r"'v1' is not loaded \(loaded: v0, v2\)"):
        table.acquire("v1")  # no new request on a retiring version
    assert table.release("v1") is None  # one reply still streams
    assert table.release("v1") == "key-v1"  # the last one: detach it now
    assert table.retiring() == [] and table.loaded() == ["v0", "v2"] and table.in_flight("v1") == 0


def test_loading_a_retiring_version_again_keeps_it():
    table = table_with("v1", "v2")
    table.set_active("v1")
    table.acquire(None)
    table.set_active("v2")
    table.retire("v1")
    assert table.reuse("v1", "/adapters/v1") and table.retiring() == []
    assert table.release("v1") is None  # back in service: its last reply does not take it away
    assert table.loaded() == ["v0", "v1", "v2"]


def test_unload_refuses_the_active_version_and_unknown_ones():
    table = table_with("v1")
    table.set_active("v1")
    with pytest.raises(Conflict, match="is active"):
        table.check_unload("v1")
    with pytest.raises(NotFound, match="'v7' is not loaded"):
        table.check_unload("v7")


def test_concurrent_replies_are_counted_exactly():
    table = table_with("v1")
    table.set_active("v1")
    held = table.acquire(None)  # one reply outlives the others
    handed: list[object] = []

    def replies() -> None:
        for _ in range(500):
            name, _handle = table.acquire(None)
            handed.append(table.release(name))

    threads = [threading.Thread(target=replies) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert table.in_flight("v1") == 1 and not any(handed)
    table.set_active("v0")
    assert table.retire("v1") is None and table.release(held[0]) == "key-v1"
