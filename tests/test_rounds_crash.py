"""One round at a time across processes (the database lease), and a process killed mid-round: on restart its round
is marked failed and no partial version is listed or left on disk."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from learner.rounds import ABANDONED, LEASE, recover, run_round
from storage import leases, rounds, versions
from tests.test_rounds import add_demos, cfg


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lease_is_exclusive_until_released_expired_or_its_owner_dies(engine):
    a, b = leases.make_owner(), leases.make_owner()
    assert leases.acquire(engine, name="x", owner=a, ttl_s=60)
    assert not leases.acquire(engine, name="x", owner=b, ttl_s=60)
    assert leases.holder(engine, name="x") == a and leases.renew(engine, name="x", owner=a, ttl_s=60)
    assert not leases.renew(engine, name="x", owner=b, ttl_s=60)
    leases.release(engine, name="x", owner=a)
    assert leases.acquire(engine, name="x", owner=b, ttl_s=-1)  # taken, but already expired
    assert leases.acquire(engine, name="x", owner=a, ttl_s=60)
    ghost = f"{socket.gethostname()}:{dead_pid()}:gone"
    assert leases.acquire(engine, name="y", owner=ghost, ttl_s=3600)
    assert leases.holder(engine, name="y") is None and leases.acquire(engine, name="y", owner=b, ttl_s=60)
    assert not leases.renew(engine, name="y", owner=ghost, ttl_s=60)


def test_a_second_round_is_refused_while_one_runs(engine, tiny_model_dir, tmp_path):
    add_demos(engine, 1)
    other = f"{socket.gethostname()}:{os.getpid()}:other-round"  # a live holder (this very process)
    assert leases.acquire(engine, name=LEASE, owner=other, ttl_s=60)
    with pytest.raises(Exception, match="already running") as info:
        run_round(engine, model_dir=tiny_model_dir, data_dir=tmp_path, config=cfg())
    assert info.value.status == 409
    assert rounds.list_rounds(engine) == []


CHILD = """
import sys
from pathlib import Path
from learner.config import LearnerConfig
from learner.rounds import run_round
from storage.db import make_engine
config = LearnerConfig(autocast=False, steps=500, batch_size=1, micro_batch_size=1, max_new_tokens=8, threads=1)
run_round(make_engine(sys.argv[1]), model_dir=sys.argv[2], data_dir=Path(sys.argv[3]), config=config)
"""


def test_a_round_killed_mid_way_is_marked_failed_and_leaves_no_version(engine, tiny_model_dir, tmp_path):
    add_demos(engine, 2)
    url = engine.url.render_as_string(hide_password=False)
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, tiny_model_dir, str(tmp_path)])
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            listed = rounds.list_rounds(engine)
            if listed and listed[0].status == "running" and listed[0].steps:
                break
            assert child.poll() is None, "the training process ended early"
            time.sleep(0.5)
        else:
            pytest.fail("the round never got going")
        (tmp_path / "versions").mkdir(exist_ok=True)
        (tmp_path / "versions" / ".tmp-v1-half-written").mkdir()  # as if killed while writing the adapter
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    rnd = rounds.list_rounds(engine)[0]
    assert rnd.status == "running" and 0 < rnd.progress < 1  # what the dead process left
    assert [v.name for v in versions.list_versions(engine)] == ["v0"]
    assert recover(engine, tmp_path) == [rnd.id]  # what `serve`, `learn --daemon` and the next round do first
    rnd = rounds.get_round(engine, round_id=rnd.id)
    assert rnd.status == "failed" and rnd.error == ABANDONED and rnd.finished is not None
    assert list((tmp_path / "versions").iterdir()) == []
    assert recover(engine, tmp_path) == [] and leases.holder(engine, name=LEASE) is None
