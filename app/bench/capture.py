"""Capture at scale: a database holding 100k demonstrations (each with its conversation), 32 writers recording chat
turns and corrections at once, and the admin's reads measured meanwhile. Targets (issue 13): p99 acknowledged write
<= 50 ms, a review-queue page <= 100 ms, the dashboard <= 500 ms. Run by hand from the repository root:

    .venv/bin/python -m app.bench.capture                      # SQLite in a temporary folder; about a minute
    .venv/bin/python -m app.bench.capture --rows 100000 --writers 32 --seconds 20 --json bench/results/capture.json
    .venv/bin/python -m app.bench.capture --database-url postgresql+psycopg://...   # an empty database

Writers and readers are asyncio tasks calling storage through `asyncio.to_thread`, as the server does, so the times
include waiting for a pool thread (what a client sees, less HTTP). A write is what one API request commits, through
the same storage functions: a chat turn's prompt (`conversations.record_prompt`, one transaction), its reply
(`add_message`), and a correction of that reply by its response id (`correct_reply`, what POST /v1/feedback does).
Each writer waits about `--think-ms` between its turns (uniformly 0.5x to 1.5x; 0: as fast as it can, the worst
case). Each kind of read runs about twice a second: the review queue's pages (queries.read_queue, as GET
/api/admin/demonstrations: first page, a deep page by cursor, a skill filter, an author, a text search) and the
dashboard's data (dashboard_data and version_rows, what the Dashboard tab and GET /api/admin/scores read).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, text

from app.services import queries
from storage import conversations, evals
from storage.db import make_engine, upgrade
from storage.models import Conversation, Demonstration, Message, ModelVersion, User
from storage.queue import QueueFilter
from storage.users import hash_password
from storage.versions import ensure_base_version

TARGETS_MS = {"write": 50.0, "queue": 100.0, "dashboard": 500.0}
SKILLS = ("geography", "arithmetic", "style", "history", "code", "units")


def seed(db: Engine, rows: int, writers: int) -> list[int]:
    """`writers` users, `rows` corrected replies (conversation, user turn, reply, demonstration), 20 versions with
    scores on 6 skills. Returns the writers' user ids."""
    start = dt.datetime(2026, 1, 1)
    password = hash_password("password-123")
    with db.begin() as conn:
        conn.execute(
            insert(User), [{"name": f"w{i}", "role": "user", "password_hash": password} for i in range(writers)]
        )
        ids = list(conn.execute(select(User.id).order_by(User.id)).scalars())
        first_conv = (conn.execute(select(Conversation.id).order_by(Conversation.id.desc())).scalar() or 0) + 1
        conn.execute(insert(Conversation), [
            {"id": first_conv + i, "user_id": ids[i % writers], "title": f"question {i}",
             "created": start + dt.timedelta(seconds=i), "updated": start + dt.timedelta(seconds=i)}
            for i in range(rows)
        ])  # fmt: skip
        conn.execute(insert(Message), [
            {"conversation_id": first_conv + i // 2, "position": i % 2, "role": ("user", "assistant")[i % 2],
             "content": f"question {i // 2}" if i % 2 == 0 else f"reply {i // 2}",
             "response_id": f"seed-{i // 2}" if i % 2 else None, "model_version": "v0" if i % 2 else None}
            for i in range(2 * rows)
        ])  # fmt: skip
        if conn.dialect.name == "postgresql":  # explicit ids leave the sequence behind: the writers' ids follow
            sequence = "pg_get_serial_sequence('conversations', 'id')"
            conn.execute(text(f"SELECT setval({sequence}, max(id)) FROM conversations"))
        replies = dict(
            conn.execute(select(Message.conversation_id, Message.id).where(Message.role == "assistant")).all()
        )
        conn.execute(insert(Demonstration), [
            {"messages": [{"role": "user", "content": f"question {i}"}], "corrected_answer": f"answer {i}",
             "original_answer": f"reply {i}", "skill": SKILLS[i % len(SKILLS)], "author_id": ids[i % writers],
             "source_message_id": replies[first_conv + i], "status": ("pending", "approved", "rejected")[i % 3],
             "created": start + dt.timedelta(seconds=i), "note": ""}
            for i in range(rows)
        ])  # fmt: skip
        conn.execute(insert(ModelVersion), [
            {"name": f"v{i}", "parent": f"v{i - 1}", "status": "retired", "adapter_path": f"/versions/v{i}"}
            for i in range(1, 20)
        ])  # fmt: skip
    for i in range(20):
        scores = {s: {"score": 0.4 + 0.01 * ((i * 7 + j) % 20), "n": 60, "details": {}} for j, s in enumerate(SKILLS)}
        evals.record_eval(db, version=f"v{i}", skills=scores)
    return ids


async def writer(db: Engine, user_id: int, stop: float, think: float, out: list[tuple[str, float]]) -> None:
    turn = 0
    await asyncio.sleep(random.uniform(0, think))  # users do not start in step
    while time.monotonic() < stop:
        turn += 1
        messages = [{"role": "user", "content": f"writer {user_id} turn {turn}: what is {turn} + {user_id}?"}]
        response_id = f"bench-{user_id}-{turn}-{time.monotonic_ns()}"
        cid = await timed(out, "prompt", conversations.record_prompt, db, user_id=user_id, conversation_id=None,
                          messages=messages)  # fmt: skip
        await timed(out, "reply", conversations.add_message, db, conversation_id=cid, role="assistant",
                    content="I think so.", model_version="v0", response_id=response_id)  # fmt: skip
        await timed(out, "correction", conversations.correct_reply, db, user_id=user_id,
                    correction=f"{turn + user_id}", skill="arithmetic", response_id=response_id)  # fmt: skip
        await asyncio.sleep(random.uniform(0.5, 1.5) * think)


async def reader(name: str, read: Callable[[], Any], stop: float, out: list[tuple[str, float]]) -> None:
    while time.monotonic() < stop:
        await asyncio.sleep(random.uniform(0.25, 0.75))  # each kind of read about twice a second
        await timed(out, name, read)


async def timed(out: list[tuple[str, float]], kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn` on the event loop's thread pool, as the server runs storage calls; the time includes waiting for a
    thread (what the caller sees, less HTTP)."""
    t0 = time.perf_counter()
    result = await asyncio.to_thread(fn, *args, **kwargs)
    out.append((kind, 1000 * (time.perf_counter() - t0)))
    return result


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 1), "p99_ms": round(p99, 1),
            "max_ms": round(ordered[-1], 1)}  # fmt: skip


def run(db: Engine, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    ids = seed(db, args.rows, args.writers)
    if db.dialect.name == "postgresql":  # statistics and a clean GIN, as autovacuum leaves a table this size
        with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    seeded = time.perf_counter() - t0
    deep = args.rows // 10  # a cursor deep in the queue
    reads: dict[str, Callable[[], Any]] = {
        "queue: pending, first page": lambda: queries.read_queue(db, QueueFilter(), limit=25),
        "queue: pending, deep page": lambda: queries.read_queue(db, QueueFilter(), before_id=deep, limit=25),
        "queue: skill filter": lambda: queries.read_queue(db, QueueFilter(status=None, skill="units"), limit=25),
        "queue: text search": lambda: queries.read_queue(db, QueueFilter(status=None, text="question 4242")),
        "queue: one author": lambda: queries.read_queue(db, QueueFilter(author_id=ids[-1]), limit=25),
        "dashboard": lambda: (queries.dashboard_data(db), queries.version_rows(db)),
    }
    out: list[tuple[str, float]] = []

    async def load() -> None:
        stop = time.monotonic() + args.seconds
        tasks = [writer(db, uid, stop, args.think_ms / 1000, out) for uid in ids]
        tasks += [reader(name, fn, stop, out) for name, fn in reads.items()]
        await asyncio.gather(*tasks)

    cpu0 = time.process_time()
    asyncio.run(load())
    cpu = time.process_time() - cpu0  # this process's CPU (every thread) while writing and reading
    by_kind: dict[str, list[float]] = {}
    for kind, ms in out:
        by_kind.setdefault(kind, []).append(ms)
    writes = [ms for kind, ms in out if kind in ("prompt", "reply", "correction")]
    result = {
        "rows": args.rows, "writers": args.writers, "seconds": args.seconds, "think_ms": args.think_ms,
        "seed_s": round(seeded, 1), "dialect": db.dialect.name, "writes_per_s": round(len(writes) / args.seconds, 1),
        "write": summary(writes), "by_kind": {k: summary(v) for k, v in by_kind.items()},
    }  # fmt: skip
    pages = [v["p99_ms"] for k, v in result["by_kind"].items() if k.startswith("queue") and "text" not in k]
    result["met"] = {
        "write_p99": result["write"]["p99_ms"] <= TARGETS_MS["write"],
        "queue_page_p99": max(pages) <= TARGETS_MS["queue"],
        "text_search_p99": result["by_kind"]["queue: text search"]["p99_ms"] <= TARGETS_MS["queue"],
        "dashboard_p99": result["by_kind"]["dashboard"]["p99_ms"] <= TARGETS_MS["dashboard"],
    }
    # At saturation the writes/s are this process's CPU over the CPU a write costs (the reads' share included)
    result["cpu_cores_used"] = round(cpu / args.seconds, 2)
    result["cpu_ms_per_write"] = round(1000 * cpu / max(1, len(writes)), 2)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]  # other work on the machine skews every figure
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="demonstrations in the database first (100000)")
    parser.add_argument("--writers", type=int, default=32, help="concurrent writers (32)")
    parser.add_argument("--seconds", type=float, default=20, help="how long the writers write (20)")
    parser.add_argument("--think-ms", type=float, default=0, help="pause of each writer between turns (0)")
    parser.add_argument("--database-url", help="an empty database (default: SQLite in a temporary folder)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = make_engine(args.database_url or f"sqlite:///{tmp}/capture.db")
        upgrade(db)
        ensure_base_version(db)
        result = run(db, args)
        db.dispose()
    head = f"{result['dialect']}: {args.rows:,} demonstrations (seeded in {result['seed_s']} s), {args.writers} writers"
    print(f"{head} for {args.seconds:g} s (think {args.think_ms:g} ms): {result['writes_per_s']} acknowledged writes/s")
    print(f"  this process used {result['cpu_cores_used']} cores, {result['cpu_ms_per_write']} ms CPU per write")
    print(f"  {'what':<30} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, s in [("every write", result["write"]), *result["by_kind"].items()]:
        print(f"  {name:<30} {s['n']:>6} {s['p50_ms']:>8} {s['p99_ms']:>8} {s['max_ms']:>8}")
    print(
        f"  load average {result['load_average']}; targets met:",
        ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result["met"].items()),
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
