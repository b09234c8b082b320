"""Leases: named locks with an expiry in the database, shared by every process on it (one learning round at a time).

The holder renews its lease while it works (`renew`); a lease is free when released, expired, or held by a process
on this host that no longer exists (so a killed round is detected at once, without waiting for the expiry).

Taking a lease is a compare-and-swap, atomic on every backend without relying on SQLite's single writer: a free
lease is claimed by an `UPDATE ... WHERE owner = <the holder we saw> AND expires = <its expiry>`, a missing one by an
`INSERT ... ON CONFLICT DO NOTHING`; of several processes racing for it exactly one changes a row. (On PostgreSQL the
losers' UPDATE waits for the winner's row lock, re-reads the row and no longer matches.)

    owner = make_owner()
    if acquire(db, name="learner", owner=owner, ttl_s=120): ... renew(...) ... release(...)
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from storage.db import reading, transaction
from storage.models import Lease, utcnow


def make_owner() -> str:
    """host:pid:random, unique per call, so two holders in one process are told apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_alive(owner: str) -> bool:
    """False only when the owner ran on this host and its process is gone; other hosts are assumed alive."""
    try:
        host, pid, _ = owner.rsplit(":", 2)
        pid_n = int(pid)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid_n, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free(lease: Lease | None, owner: str) -> bool:
    return lease is None or lease.owner == owner or lease.expires <= utcnow() or not owner_alive(lease.owner)


def acquire(db: Engine, *, name: str, owner: str, ttl_s: float) -> bool:
    """Take (or extend) the lease for `ttl_s` seconds if it is free; False when another live holder has it."""
    with reading(db) as s:
        seen = s.get(Lease, name)
    if not _free(seen, owner):
        return False
    expires = utcnow() + dt.timedelta(seconds=ttl_s)
    with transaction(db) as s:
        if seen is None:
            insert = (postgresql if db.dialect.name == "postgresql" else sqlite).insert(Lease)
            claim = insert.values(name=name, owner=owner, expires=expires).on_conflict_do_nothing()
            claim = claim.execution_options(preserve_rowcount=True)  # SQLAlchemy keeps INSERT rowcounts only if told
        else:
            claim = (
                update(Lease)
                .where(Lease.name == name, Lease.owner == seen.owner, Lease.expires == seen.expires)
                .values(owner=owner, expires=expires)
            )
        return s.execute(claim).rowcount == 1


def renew(db: Engine, *, name: str, owner: str, ttl_s: float) -> bool:
    """Extend a lease we hold; False if it was lost (expired and taken by another process, or released)."""
    expires = utcnow() + dt.timedelta(seconds=ttl_s)
    with transaction(db) as s:
        claim = update(Lease).where(Lease.name == name, Lease.owner == owner).values(expires=expires)
        return s.execute(claim).rowcount == 1


def release(db: Engine, *, name: str, owner: str) -> None:
    """Give the lease up (a no-op if another owner holds it)."""
    with transaction(db) as s:
        s.execute(delete(Lease).where(Lease.name == name, Lease.owner == owner))


def holder(db: Engine, *, name: str) -> str | None:
    """The owner holding `name` now, or None when it is free."""
    with reading(db) as s:
        lease = s.scalar(select(Lease).where(Lease.name == name))
    if lease is None or _free(lease, owner=""):
        return None
    return lease.owner
