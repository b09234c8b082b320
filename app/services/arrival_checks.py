"""The teacher check on arrival: every demonstration waiting for review gets its check in the background.

`check_arrivals(state)` runs for the server's life (a task of app/main.py's lifespan, when
`teacher_check_on_arrival` is on). Each pass takes up to `teacher_check_batch` pending demonstrations with no check
of their correction as it reads now (new ones, and ones edited since their check), oldest first, from the database,
so a restarted server finds them again; then it checks them one after the other through app/services/answers.py's
teacher_check, the same engine call as the reviewer's button. Low priority, never blocking chat: one check at a
time, so the check holds at most one of the engine's generation slots, and a free slot goes first to the users with
the fewest replies running (the engine's fairness); the web server's event loop only awaits. When the engine is full
it waits a pass and tries again. A demonstration whose check fails twice for another reason (say, a conversation
longer than the input limit) is logged and left alone until the server restarts.

Several servers on one database: a lease (storage/leases.py) lets one of them check at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from app.engines.base import EngineBusy
from app.services import answers
from app.state import AppState
from storage import leases, teacher_checks

log = logging.getLogger(__name__)
LEASE = "teacher-checks"
ATTEMPTS = 2  # a check that failed this often is skipped until the server restarts


async def check_arrivals(state: AppState) -> None:
    """Check new demonstrations until cancelled (the server stops)."""
    settings = state.settings
    owner, failures = leases.make_owner(), Counter[int]()  # failed attempts per demonstration, this process's life
    ttl = max(60.0, 4 * settings.teacher_check_interval_s)
    try:
        while True:
            done = 0
            try:
                done = await check_batch(state, owner, ttl, failures)
            except Exception:  # the loop must outlive a database hiccup
                log.exception("teacher checks on arrival: a pass failed; trying again in %.0f s",
                              settings.teacher_check_interval_s)  # fmt: skip
            await asyncio.sleep(0.5 if done == settings.teacher_check_batch else settings.teacher_check_interval_s)
    finally:
        await asyncio.to_thread(leases.release, state.db, name=LEASE, owner=owner)


async def check_batch(state: AppState, owner: str, ttl: float, failures: Counter[int]) -> int:
    """One pass: up to teacher_check_batch checks, if this server holds the lease. Returns how many were done."""
    if not await asyncio.to_thread(leases.acquire, state.db, name=LEASE, owner=owner, ttl_s=ttl):
        return 0
    batch = state.settings.teacher_check_batch
    skip = [i for i, n in failures.items() if n >= ATTEMPTS]
    ids = await asyncio.to_thread(teacher_checks.unchecked_ids, state.db, limit=batch, skip=skip)
    done = 0
    for demo_id in ids:
        try:
            checked = await answers.teacher_check(state, demo_id)
        except EngineBusy:
            return done  # the engine is full with users' replies: they come first
        except Exception as e:  # gone (deleted), refused by the engine (too long), a version swapped away meanwhile
            failures[demo_id] += 1
            left = "; skipped until the server restarts" if failures[demo_id] >= ATTEMPTS else "; trying again later"
            log.warning("teacher check of demonstration %s on arrival failed: %s%s", demo_id, e, left)
            continue
        done += 1
        verdict = "flagged" if checked["teacher_check"]["teacher_disagrees"] else "checked"
        log.info("teacher check of demonstration %s on arrival: %s", demo_id, verdict)
        await asyncio.to_thread(leases.renew, state.db, name=LEASE, owner=owner, ttl_s=ttl)
    return done
