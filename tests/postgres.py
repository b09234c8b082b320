"""A throwaway PostgreSQL server for the tests: one per pytest session, started on first use, in a temp folder, on a
free port, with durability off (fsync, synchronous_commit: tests never survive a crash), stopped at the session's end.

Each test gets a fresh database copied from a migrated template (`CREATE DATABASE ... TEMPLATE`, tens of ms), so
tests stay independent without re-running the migrations. With APPRENTICE_TEST_POSTGRES_URL set (an admin URL of a
server you run) no server is started and the databases are made there. The binaries come from Debian's `postgresql`
package (`make postgres` installs it); as root, initdb and the server run as the `postgres` user.

    python -m tests.postgres     # start one, print its URL, stop it on Enter (to poke at it by hand)
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from storage.db import make_engine, upgrade

TEMPLATE = "apprentice_template"


def bin_dir() -> Path | None:
    """The folder of initdb/pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(dirs[-1]).parent if dirs else None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_stale(bindir: Path, as_postgres: list[str]) -> None:
    """Stop the servers of test sessions that were killed before their teardown (their owner process is gone)."""
    for owner in glob.glob(os.path.join(tempfile.gettempdir(), "apprentice-pg-*", "owner.pid")):
        root = Path(owner).parent
        with contextlib.suppress(OSError, ValueError):
            if not _alive(int(Path(owner).read_text())):
                cmd = [*as_postgres, bindir / "pg_ctl", "-D", root / "data", "-m", "immediate", "stop"]
                subprocess.run(cmd, capture_output=True)
                shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def server() -> Iterator[str]:
    """Start a private PostgreSQL server; yields its admin URL (user postgres, database postgres, no password)."""
    bindir = bin_dir()
    assert bindir, "no PostgreSQL binaries: `make postgres` installs Debian's postgresql package"
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses to run as root
    _reap_stale(bindir, as_postgres)
    root = Path(tempfile.mkdtemp(prefix="apprentice-pg-"))
    (root / "owner.pid").write_text(str(os.getpid()))
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    run = lambda *args: subprocess.run([*as_postgres, *args], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        run(bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-o", options, "-w", "start")
    except subprocess.CalledProcessError as e:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {e.stdout}{e.stderr}") from e
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


class Databases:
    """Fresh, migrated databases on one server: `new()` copies the template made at construction."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url).set(drivername="postgresql+psycopg")
        self.admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self.template = f"{TEMPLATE}_{uuid.uuid4().hex[:8]}"  # a shared server may serve several sessions
        self._execute(f'CREATE DATABASE "{self.template}"')
        template = make_engine(self.url(self.template))
        upgrade(template)
        template.dispose()

    def url(self, name: str) -> str:
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def _execute(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(sql))

    def new(self, *, migrated: bool = True) -> str:
        """A new database: a copy of the migrated template, or empty."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        self._execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{self.template}"' if migrated else ""))
        return self.url(name)

    def drop(self, url: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def close(self) -> None:
        self.drop(self.url(self.template))
        self.admin.dispose()


if __name__ == "__main__":
    with server() as url:
        print(url, flush=True)
        input("Enter stops it: ")
