"""The learner lease under contention, on both backends: 8 processes race for it 200 times and exactly one wins
each race, whether the lease was released (INSERT path) or left behind expired by a holder that stopped renewing
(UPDATE path)."""

from __future__ import annotations

import multiprocessing

from storage import leases

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
