"""Engine, sessions and migrations, on SQLite (one file, the default) or PostgreSQL (several processes or machines).

engine = make_engine("sqlite:///data/apprentice.db")    # or "postgresql://user:pw@host/db" (driver: psycopg 3)
upgrade(db)                      # Alembic to head; refuses a database from a newer Apprentice
with transaction(db) as s: ...   # one short write transaction; commits or rolls back
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import SchemaTooNew

MIGRATIONS = Path(__file__).parent / "migrations"
WAL_FILE = "apprentice_wal_file"  # a SQLite connection's WAL file, in its pool record's info


def normalize_url(url: str) -> str:
    """PostgreSQL URLs without a driver (postgresql://, postgres://) get psycopg 3, the driver we depend on."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _journal_mode_wal(cur: sqlite3.Cursor, wait_s: float = 30.0) -> bool:
    """Switch the file to WAL; True if it is in WAL mode. Processes opening a fresh file at once can race for the
    switch, and SQLite then answers "database is locked" at once, without its busy timeout: retry until `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return cur.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL, foreign keys, a busy timeout, and every write `transaction` acknowledges is on disk
    (see `_flush_wal`); PostgreSQL runs at its default READ COMMITTED, and a connection is checked before use (a
    restarted server)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        db = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(db, "connect")
        def _pragmas(dbapi_conn, record) -> None:  # noqa: ANN001
            dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below take control
            cur = dbapi_conn.cursor()
            wal = _journal_mode_wal(cur)
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            path = next((row[2] for row in cur.execute("PRAGMA database_list") if row[1] == "main"), "")
            if wal and path:  # a file in WAL mode: `transaction` syncs the log itself, outside the writers' turn
                record.info[WAL_FILE] = f"{path}-wal"
                cur.execute("PRAGMA synchronous=NORMAL")
            else:  # in memory, or a file system without WAL: SQLite syncs every commit
                cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @event.listens_for(db, "begin")
        def _begin(conn) -> None:  # noqa: ANN001
            # Writers BEGIN IMMEDIATE: they take the write lock up front and queue on busy_timeout, instead of
            # failing with "database is locked" when a read transaction tries to upgrade to a write.
            conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}")

        return db
    return create_engine(make_url(url), pool_pre_ping=True)


def _alembic_config(db: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = db
    return cfg


def current_revision(db: Engine) -> str | None:
    with db.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head() or ""


def check_schema(db: Engine) -> None:
    """Refuse a database written by a newer Apprentice (a revision our migrations do not know)."""
    rev = current_revision(db)
    known = {s.revision for s in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}
    if rev is not None and rev not in known:
        raise SchemaTooNew(
            f"the database schema ({rev}) is newer than this Apprentice knows (head {head_revision()}); "
            "upgrade Apprentice or point --database-url at another database"
        )


# Any fixed number: the key of PostgreSQL's advisory lock that serializes migrations across processes.
MIGRATION_LOCK = 0x41505052


@contextlib.contextmanager
def _migration_lock(db: Engine) -> Iterator[None]:
    """Replicas starting at once on PostgreSQL migrate one after the other (the others then find nothing to do);
    SQLite's single writer needs no lock."""
    if db.dialect.name != "postgresql":
        yield
        return
    with db.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            conn.commit()


def upgrade(db: Engine) -> str:
    """Apply every migration up to head; returns the revision now in place."""
    with _migration_lock(db):
        check_schema(db)
        # SQLite: the migration's transaction takes the write lock up front, so processes starting at once queue
        # on the busy timeout instead of failing to upgrade a read lock.
        command.upgrade(_alembic_config(db.execution_options(sqlite_begin="IMMEDIATE")), "head")
    with db.connect() as conn:
        wal_file = conn.connection.info.get(WAL_FILE)
    if wal_file:
        _flush_wal(wal_file)
    return head_revision()


def session_factory(db: Engine) -> sessionmaker[Session]:
    return sessionmaker(db, expire_on_commit=False)


BUSY_TIMEOUT_S = 30  # the busy_timeout pragma above, in seconds
_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_WRITERS_LOCK = threading.Lock()


@contextlib.contextmanager
def _writer_turn(db: Engine) -> Iterator[None]:
    """On SQLite, a process's writers take turns on a lock before BEGIN IMMEDIATE: a waiting thread wakes as soon as
    the writer before it commits, where SQLite's busy handler would have it sleep and poll (up to 100 ms a try),
    which under many concurrent writers left some waiting for seconds. Other processes still queue on busy_timeout,
    and so does a writer that waited as long as that (never a deadlock the busy timeout would not have had)."""
    if db.dialect.name != "sqlite":
        yield
        return
    with _WRITERS_LOCK:
        lock = _SQLITE_WRITERS.setdefault(db, threading.RLock())
    turn = lock.acquire(timeout=BUSY_TIMEOUT_S)
    try:
        yield
    finally:
        if turn:
            lock.release()


@contextlib.contextmanager
def transaction(db: Engine) -> Iterator[Session]:
    """One short unit of work: commit on success, roll back on error. Objects stay usable after commit. On SQLite it
    returns once the commit is on disk."""
    with _writer_turn(db), db.connect() as conn:
        wal_file = conn.connection.info.get(WAL_FILE)
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with Session(bind=conn, expire_on_commit=False) as session, session.begin():
            yield session
    if wal_file:
        _flush_wal(wal_file)


def _flush_wal(path: str) -> None:
    """Group commit for SQLite: the commit's pages are in the WAL file (synchronous=NORMAL wrote them without an
    fsync, inside the writers' turn); the fdatasync here, after the turn, puts them on disk before the caller
    acknowledges the write, and writers that committed meanwhile share one disk flush instead of taking turns on an
    fsync each (about 4 ms here). The WAL is appended in order, so a flush covers every earlier commit too; SQLite
    itself syncs the WAL before a checkpoint copies it into the database, the database after, and the WAL's header
    when the log starts over, so nothing the WAL held is lost when it is reused or removed. A process crash loses no
    commit either way. A reader may see a commit a few ms before it is on disk; whatever it then writes commits later
    in the WAL, and the flush that acknowledges it covers both."""
    try:
        # The WAL carries none of SQLite's POSIX locks (those are on the database and -shm files), so opening and
        # closing it here releases none of them.
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # the last connection closed: SQLite checkpointed (and synced) the WAL, then removed it
        return
    try:
        getattr(os, "fdatasync", os.fsync)(fd)  # macOS has no fdatasync
    finally:
        os.close(fd)


@contextlib.contextmanager
def reading(db: Engine) -> Iterator[Session]:
    """A read-only session (no write lock is taken on SQLite)."""
    with Session(db, expire_on_commit=False) as session:
        yield session
