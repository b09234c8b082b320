"""Scale-out, end to end (README, "Replicas"): two `apprentice serve` processes and one `apprentice learn --daemon` on
one PostgreSQL database and one shared data directory, the tiny model. Under steady traffic to both servers:
feedback and corrections sent to either land once; the daemon's round makes a new version live and both servers
serve it (X-Model-Version) within the poll interval; a rollback by `apprentice activate` reaches both the same way;
no request fails; rounds never overlap.

Runs in `make test` (PostgreSQL only; ~50 s on 2 cores). `pytest -s` prints how long each server took to serve the
new version and the rollback."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from storage import review, users, versions
from storage.db import make_engine, reading
from storage.models import Demonstration, Feedback, TrainingRound
from tests.serving_helpers import free_port

POLL = 0.5  # APPRENTICE_VERSION_POLL_SECONDS of both servers
SWAP_S = 5.0  # after the poll: loading the adapter beside the live one, and the request already under way
APPRENTICE = str(Path(sys.executable).parent / "apprentice")
TINY_ROUND = {"steps": 2, "batch_size": 2, "micro_batch_size": 2, "max_new_tokens": 8, "autocast": False}


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A process in a session of its own, so that stopping it stops its workers too."""
    out = log.open("w")
    return subprocess.Popen([APPRENTICE, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what is left of its session (a round's worker, say)


@contextlib.contextmanager
def processes(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[list[str], subprocess.Popen]]:
    ports = [free_port(), free_port()]
    servers = [start(["serve", "--port", str(p)], env, tmp_path / f"server{i}.log") for i, p in enumerate(ports)]
    learner = None
    try:
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        deadline = time.monotonic() + 240
        for url, proc in zip(urls, servers, strict=True):
            while not _healthy(url):
                assert proc.poll() is None, (tmp_path / f"server{servers.index(proc)}.log").read_text()
                assert time.monotonic() < deadline, "a server did not start"
                time.sleep(0.5)
        learner = start(["learn", "--daemon"], env, tmp_path / "learner.log")
        yield urls, learner
    finally:
        stop([p for p in (*servers, learner) if p is not None])


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Traffic:
    """Chat requests to both servers in turn, from a thread, until stopped: (server, started, status, version)."""

    def __init__(self, urls: list[str], key: str) -> None:
        self.urls, self.key, self.log = urls, key, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(timeout=60) as client:
            i = 0
            while not self._stop.is_set():
                url, started = self.urls[i % 2], time.time()
                try:
                    r = client.post(url + "/v1/chat/completions", json=body, headers=headers)
                    self.log.append((url, started, r.status_code, r.headers.get("X-Model-Version")))
                except httpx.HTTPError as e:
                    self.log.append((url, started, repr(e), None))
                i += 1
                time.sleep(0.05)  # steady, not saturating: the learner needs the cores too

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def serving(self, version: str) -> bool:
        """Both servers' latest replies came from `version`."""
        latest = {u: v for u, _, _, v in self.log}
        return len(latest) == 2 and set(latest.values()) == {version}

    def lag(self, url: str, version: str, since: float) -> float:
        """Seconds from `since` to the first request to `url` served by `version`, after which every one is."""
        rows = [(started, v) for u, started, _, v in self.log if u == url and started >= since]
        first = next((i for i, (_, v) in enumerate(rows) if v == version), None)
        assert first is not None, f"{url} never served {version}"
        assert all(v == version for _, v in rows[first:]), f"{url} went back from {version}"
        return rows[first][0] - since


def wait_for(check, timeout: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def activated_at(db, name: str) -> float:  # noqa: ANN001
    return versions.get_version(db, name=name).activated.replace(tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_two_servers_and_a_learner_daemon_on_one_database(database_url, tiny_model_dir, tmp_path):
    env = {**os.environ, "APPRENTICE_DATABASE_URL": database_url, "APPRENTICE_HOME": str(tmp_path / "data"),
           "APPRENTICE_MODEL": tiny_model_dir, "APPRENTICE_MODEL_CACHE": str(tmp_path / "cache"),
           "APPRENTICE_VERSION_POLL_SECONDS": str(POLL), "APPRENTICE_LEARN_IN_SERVER": "false",
           "APPRENTICE_THREADS": "1", "APPRENTICE_LEARN_CONFIG": json.dumps(TINY_ROUND),
           "APPRENTICE_LEARN_MIN_DEMOS": "2", "APPRENTICE_LEARN_INTERVAL_MINUTES": "0.05",
           "APPRENTICE_LEARN_ACTIVATE": "true", "APPRENTICE_LEARN_METHOD": "sft",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    db = make_engine(database_url)
    with processes(env, tmp_path) as (urls, learner):
        ann = users.create_user(db, name="ann", role="admin", password="password-1")
        users.create_user(db, name="bob", role="user", password="password-2")
        bob = {"Authorization": f"Bearer {users.create_api_key(db, name='bob')}"}
        with Traffic(urls, users.create_api_key(db, name="ann")) as traffic:
            # bob chats on each server and sends his feedback on each reply to the other one, the correction to both
            replies = []
            for url in urls:
                body = {"messages": [{"role": "user", "content": f"Capital of Veltoria? ({url})"}], "max_tokens": 4}
                replies.append(httpx.post(url + "/v1/chat/completions", json=body, headers=bob, timeout=60).json())
            for reply, url in zip(replies, reversed(urls), strict=True):
                rating = {"response_id": reply["id"], "rating": 1}
                assert httpx.post(url + "/v1/feedback", json=rating, headers=bob, timeout=30).status_code == 200
                fix = {"response_id": reply["id"], "correction": "Veltor."}
                for either in urls:
                    assert httpx.post(either + "/v1/feedback", json=fix, headers=bob, timeout=30).status_code == 200
            with reading(db) as s:
                demo_ids = list(s.scalars(select(Demonstration.id)))
                assert len(demo_ids) == 2 and s.scalar(select(func.count(Feedback.id))) == 2, "each landed once"
            for demo_id in demo_ids:
                review.approve(db, demo_id=demo_id, reviewer_id=ann.id)

            # the daemon's round (every 3 s, at least 2 new demonstrations) makes its version live at once
            new = wait_for(lambda: versions.active_version(db).name != "v0" and versions.active_version(db), 300,
                           "the daemon's round")  # fmt: skip
            wait_for(lambda: traffic.serving(new.name), 120, f"both servers serving {new.name}")
            lags = {url: traffic.lag(url, new.name, activated_at(db, new.name)) for url in urls}
            done = subprocess.run([APPRENTICE, "activate", "v0"], env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            wait_for(lambda: traffic.serving("v0"), 120, "both servers back on v0")
            back = {url: traffic.lag(url, "v0", activated_at(db, "v0")) for url in urls}
        assert learner.poll() is None, (tmp_path / "learner.log").read_text()
    failed = [row for row in traffic.log if row[2] != 200]
    assert not failed and len(traffic.log) > 20, f"{len(failed)} of {len(traffic.log)} requests failed: {failed[:3]}"
    print(f"\n{len(traffic.log)} requests; activation of {new.name} seen after {lags}; rollback after {back}")
    assert all(lag <= POLL + SWAP_S for lag in [*lags.values(), *back.values()]), (lags, back)
    with reading(db) as s:
        spans = sorted((r.started, r.finished) for r in s.scalars(select(TrainingRound)))
    assert spans and all(a[1] is not None and a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
    db.dispose()
