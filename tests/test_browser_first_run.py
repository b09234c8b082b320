"""First run: `apprentice serve` on a fresh data directory creates the admin `admin`, prints its generated password
once, and the sign-in page says where to look; Chromium signs in with exactly the printed password and adds a user
in the Users tab; a stranger's 6th guess at that user's password is refused with a message saying how long to wait.
A second start creates nothing and prints no password. Needs /usr/bin/chromium (`make browser`).

    .venv/bin/python -m pytest -q -m browser tests/test_browser_first_run.py
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from storage import users
from storage.db import make_engine
from tests.test_browser_chat import CHROMIUM, CHROMIUM_ARGS, cli, free_port

pytestmark = pytest.mark.browser

PRINTED = re.compile(r"created the admin account 'admin' with the password (\S+)")


def serve(data: Path, model_dir: str, log_name: str) -> tuple[subprocess.Popen, str, Path]:
    env = {**os.environ, "APPRENTICE_HOME": str(data), "APPRENTICE_MODEL": model_dir,
           "APPRENTICE_MAX_NEW_TOKENS": "8", "APPRENTICE_LEARN_IN_SERVER": "0"}  # fmt: skip
    env.pop("APPRENTICE_ADMIN_PASSWORD", None)
    port = free_port()
    log = data / log_name
    with log.open("w") as out:
        proc = subprocess.Popen(cli("serve", "--port", str(port)), env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300  # a busy 2-core machine: the second start took over 2 minutes once
    try:
        while True:
            assert proc.poll() is None, f"apprentice serve exited:\n{log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(url, timeout=2)
                return proc, url, log
            except OSError:
                assert time.time() < deadline, "apprentice serve did not answer within 300 s"
                time.sleep(0.5)
    except BaseException:
        stop(proc)  # never leave a server behind
        raise


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_first_run_prints_the_admin_password_and_it_signs_in(tiny_model_dir, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make browser` (apt-get install chromium)"
    proc, url, log = serve(tmp_path, tiny_model_dir, "first.log")
    try:
        found = PRINTED.findall(log.read_text())
        assert len(found) == 1, log.read_text()
        password = found[0]
        assert len(password) >= 12
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(url)
            expect(page.get_by_text("log of `apprentice serve`", exact=False)).to_be_visible()
            page.get_by_label("username").fill("admin")
            page.get_by_label("password").fill(password)
            page.get_by_role("button", name="Login").click()
            expect(page.locator("#whoami")).to_contain_text("Signed in as admin", timeout=30_000)
            expect(page.get_by_role("tab", name="Versions")).to_be_visible()
            page.get_by_role("tab", name="Users").click()  # the admin adds a reviewer in the Users tab
            expect(page.locator("#users-table")).to_contain_text("admin")
            page.locator("#users-new-name textarea, #users-new-name input").first.fill("bea")
            page.locator("#users-new-password input").fill("bea-password")
            page.locator("#users-add").click()
            expect(page.locator("#users-message")).to_contain_text("created user bea")
            expect(page.locator("#users-table")).to_contain_text("bea")
            page.screenshot(path="/tmp/apprentice-users-tab.png", full_page=True)
            guess = browser.new_context().new_page()  # a stranger guessing bea's password
            guess.goto(url)
            for attempt in range(6):
                guess.get_by_label("username").fill("bea")
                guess.get_by_label("password").fill(f"guess-{attempt}")
                with guess.expect_response(lambda r: r.url.endswith("/login")) as answer:
                    guess.get_by_role("button", name="Login").click()
                assert answer.value.status == (400 if attempt < 5 else 429)
            expect(guess.locator("#sign-in-refused")).to_contain_text("Too many wrong passwords for 'bea': wait")
            browser.close()
    finally:
        stop(proc)
    proc, _, log = serve(tmp_path, tiny_model_dir, "second.log")
    stop(proc)
    assert "First run" not in log.read_text()
    db = make_engine(f"sqlite:///{tmp_path / 'apprentice.db'}")
    assert [u.name for u in users.list_users(db)] == ["admin", "bea"]
    assert users.authenticate(db, name="admin", password=password) is not None
    db.dispose()
