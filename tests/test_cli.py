"""The `apprentice` command line, run as a user runs it (a real subprocess), including its error paths."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

APPRENTICE = str(Path(sys.executable).with_name("apprentice"))


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [APPRENTICE, *args], capture_output=True, text=True, input=input, env={**os.environ, **(env or {})}
    )


def test_help_lists_subcommands():
    out = run("--help")
    assert out.returncode == 0
    for command in ("serve", "db", "users", "model"):
        assert command in out.stdout


def test_a_bad_setting_from_the_environment_is_one_clear_line(tmp_path):
    out = run("--data-dir", str(tmp_path), "versions", env={"APPRENTICE_GATE_MARGIN": "5"})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: setting gate_margin (APPRENTICE_GATE_MARGIN): Input should be less than or equal to 1 (got '5')"
    ]


def test_db_upgrade_and_users_add(tmp_path):
    data = str(tmp_path / "data")
    out = run("db", "upgrade", "--data-dir", data)
    assert out.returncode == 0 and "schema" in out.stdout
    assert run("users", "add", "ann", "--role", "admin", "--password", "s3cretpass", "--data-dir", data).returncode == 0
    dup = run("users", "add", "ann", "--role", "user", "--password", "s3cretpass", "--data-dir", data)
    assert dup.returncode == 1
    assert dup.stderr.strip() == "error: user 'ann' already exists"
    prompted = run("users", "add", "bo", env={"APPRENTICE_HOME": data}, input="pass-word-1\npass-word-1\n")
    assert prompted.returncode == 0, prompted.stderr
    key = run("users", "key", "bo", "--data-dir", data)
    assert key.returncode == 0 and key.stdout.strip().splitlines()[-1].startswith("apk-")
    listing = run("--data-dir", data, "users", "list").stdout
    assert "ann\tadmin" in listing and "bo\tuser" in listing


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data-dir", "/proc/apprentice", "db", "upgrade"], "data directory /proc/apprentice is not writable"),
        (["--model", "/no/such/model", "model", "fetch"], "neither an existing folder nor a Hub id"),
        (["users", "add", "x", "--password", "short"], "at least 8 characters"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    out = run(*args, env={"APPRENTICE_HOME": str(tmp_path)})
    assert out.returncode == 1
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_model_fetch_is_ready():
    out = run("model", "fetch")
    assert out.returncode == 0, out.stderr
    assert "checksums verified" in out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_answers_http(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [APPRENTICE, "serve", "--port", str(port), "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        page = httpx.get(f"http://127.0.0.1:{port}/")
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
