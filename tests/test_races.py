"""Writers racing on one database, on both backends (PostgreSQL runs them truly at once, at READ COMMITTED):
the learner lease (8 processes race for it 200 times, exactly one wins each race, whether the lease was released
(INSERT path) or left behind expired by a holder that stopped renewing (UPDATE path)); activations (one version
active after concurrent ones); the same correction sent to two servers at once (one demonstration); replicas
migrating a fresh database at once."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable

from storage import conversations, leases, users, versions
from storage.demonstrations import list_demonstrations

PROCESSES, RACES = 8, 200


def racer(url: str, barrier, wins, index: int) -> None:  # noqa: ANN001
    from storage.db import make_engine

    engine, owner = make_engine(url), leases.make_owner()
    try:
        for race in range(RACES):
            barrier.wait()
            won = leases.acquire(engine, name="learner", owner=owner, ttl_s=60)
            if won:
                with wins.get_lock():
                    wins[race] += 1
            barrier.wait()  # everyone has tried: the winner now gives the lease up, or lets it lapse
            if won and race % 2:
                leases.release(engine, name="learner", owner=owner)
            elif won:
                assert leases.acquire(engine, name="learner", owner=owner, ttl_s=-1), "the holder lost its lease"
    finally:
        engine.dispose()


def test_eight_processes_racing_for_the_lease_never_both_hold_it(engine):
    url = engine.url.render_as_string(hide_password=False)
    ctx = multiprocessing.get_context("spawn")
    barrier, wins = ctx.Barrier(PROCESSES, timeout=120), ctx.Array("i", RACES)
    procs = [ctx.Process(target=racer, args=(url, barrier, wins, i)) for i in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    assert list(wins) == [1] * RACES, f"races with other than one winner: {[w for w in wins if w != 1][:10]}"


def at_once(n: int, work: Callable[[int], object]) -> list[object]:
    """`work(i)` in n threads released together; their results (or exceptions) in order."""
    barrier, results = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as e:  # noqa: BLE001 - returned for the test to look at
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_activations_leave_exactly_one_version_active(engine):
    names = [f"c{i}" for i in range(8)]
    for name in names:
        versions.create_version(engine, name=name, adapter_path=f"/nowhere/{name}", parent="v0")
    for attempt in range(10):
        results = at_once(8, lambda i, a=attempt: versions.set_active(engine, name=names[(i + a) % 8]))
        assert not [r for r in results if isinstance(r, Exception)], results
        active = [v.name for v in versions.list_versions(engine) if v.status == "active"]
        assert len(active) == 1, f"attempt {attempt}: {active} all active"


def test_the_same_correction_sent_to_two_servers_at_once_lands_once(engine):
    ann = users.create_user(engine, name="ann", role="user", password="password-1")
    for attempt in range(10):
        conv = conversations.create_conversation(engine, user_id=ann.id)
        conversations.add_message(engine, conversation_id=conv.id, role="user", content="Capital of Veltoria?")
        conversations.add_message(
            engine, conversation_id=conv.id, role="assistant", content="Paris.", response_id=f"r-{attempt}"
        )
        results = at_once(
            4,
            lambda i, a=attempt: conversations.correct_reply(
                engine, user_id=ann.id, correction=f"Veltor {i}.", response_id=f"r-{a}"
            ),
        )
        assert not [r for r in results if isinstance(r, Exception)], results
    demos = list_demonstrations(engine, status=None)
    assert len(demos) == 10, f"{len(demos)} demonstrations for 10 corrected replies"


def start_replica(url: str, barrier, names) -> None:  # noqa: ANN001
    from storage.db import make_engine, upgrade

    engine = make_engine(url)  # each replica its own process (Alembic itself is not thread-safe)
    barrier.wait()
    upgrade(engine)
    names.put(versions.ensure_base_version(engine).name)
    engine.dispose()


def test_replicas_starting_at_once_on_a_fresh_database_all_start(database_url):
    from storage.db import make_engine

    ctx = multiprocessing.get_context("spawn")
    barrier, names = ctx.Barrier(4, timeout=120), ctx.Queue()
    procs = [ctx.Process(target=start_replica, args=(database_url, barrier, names)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * 4
    assert sorted(names.get(timeout=5) for _ in range(4)) == ["v0"] * 4
    engine = make_engine(database_url)
    assert [(v.name, v.status) for v in versions.list_versions(engine)] == [("v0", "active")]
    engine.dispose()


def upgrade_at_once(url: str, barrier, errors) -> None:  # noqa: ANN001
    from storage.db import make_engine, upgrade

    barrier.wait()
    try:
        upgrade(make_engine(url))
    except Exception as e:  # noqa: BLE001 - reported to the test
        errors.put(repr(e))


def test_six_processes_upgrading_one_fresh_sqlite_file_at_once_all_succeed(tmp_path):
    """Each migration step used to commit on its own, so a process that read the revision between two steps ran a
    step again ("duplicate column name") in about one try in ten; switching a fresh file to WAL could also fail."""
    ctx = multiprocessing.get_context("fork")
    for attempt in range(8):
        url, barrier, errors = f"sqlite:///{tmp_path}/race-{attempt}.db", ctx.Barrier(6, timeout=60), ctx.Queue()
        procs = [ctx.Process(target=upgrade_at_once, args=(url, barrier, errors)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0] * 6
        assert errors.empty(), f"attempt {attempt}: {errors.get()}"
