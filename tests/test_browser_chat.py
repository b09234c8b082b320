"""The chat page in a real browser: Playwright drives Debian's Chromium against `apprentice serve` on the tiny model.

Sign in, chat, watch the reply stream in, correct it in place, see that it was saved for review, and find the
demonstration (with its conversation) in the database. Needs /usr/bin/chromium (`make browser` installs it).

    .venv/bin/python -m pytest -q -m browser tests/test_browser_chat.py
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.services import open_database
from app.settings import Settings
from storage import users
from storage.db import make_engine, reading
from storage.models import Demonstration, Message, User

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct-horse-battery"
SCREENSHOT = Path("/tmp/apprentice-browser-chat.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


@contextlib.contextmanager
def serving(data: Path, env: dict[str, str], wait_s: float = 120) -> Iterator[str]:
    """`apprentice serve` on a free port in `data` (its log: data/serve.log) until the block ends; yields its URL
    once it answers."""
    port = free_port()
    log = (data / "serve.log").open("w")
    proc = subprocess.Popen(cli("serve", "--port", str(port)), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=data)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + wait_s
        while True:
            assert proc.poll() is None, f"apprentice serve exited:\n{(data / 'serve.log').read_text()[-3000:]}"
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert time.time() < deadline, f"apprentice serve did not answer within {wait_s:.0f} s"
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """`apprentice serve` on the tiny model in its own data dir, with the user alice; yields (url, data dir)."""
    data = tmp_path_factory.mktemp("browser-data")
    env = {**os.environ, "APPRENTICE_HOME": str(data), "APPRENTICE_MODEL": tiny_model_dir}
    env["APPRENTICE_MAX_NEW_TOKENS"] = "16"  # a reply long enough to stream visibly, short enough to be quick
    db = open_database(Settings(data_dir=data))  # migrated, as `apprentice users add` would leave it
    users.create_user(db, name="alice", role="user", password=PASSWORD)
    db.dispose()
    with serving(data, env) as url:
        yield url, data


@pytest.fixture()
def page():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make browser` (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


# Records every text the newest reply shows, so the test can tell a streamed reply from one that appears at once.
WATCH_REPLY = """() => {
  window.__replies = [];
  const chat = document.querySelector('#chatbot');
  new MutationObserver(() => {
    const bots = chat.querySelectorAll('[data-testid="bot"] .message-content');
    const text = bots.length ? bots[0].innerText : '';
    if (text && window.__replies[window.__replies.length - 1] !== text) window.__replies.push(text);
  }).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


def test_sign_in_chat_stream_and_correct_in_place(server, page):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    url, data = server
    started = time.time()
    page.goto(url)
    page.get_by_label("username").fill("alice")
    page.get_by_label("password").fill("wrong password")
    page.get_by_role("button", name="Login").click()
    expect(page.get_by_text("Incorrect credentials")).to_be_visible()
    page.get_by_label("username").fill("alice")  # a failed sign-in empties the form
    page.get_by_label("password").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#whoami")).to_contain_text("Signed in as alice (user)")

    page.evaluate(WATCH_REPLY)
    question = "What is the capital of France? <b>not bold</b>"
    page.locator("#message textarea").fill(question)
    page.locator("#message textarea").press("Enter")
    expect(page.locator("#message textarea")).to_be_disabled()  # streaming
    expect(page.locator("#message textarea")).to_be_enabled(timeout=60_000)  # done
    expect(page.locator("#chatbot")).to_contain_text("model v0")
    user_bubble = page.locator('#chatbot [data-testid="user"]').first
    assert user_bubble.inner_text().replace("\u200b", "") == question  # shown as text, not as markup
    assert user_bubble.locator("b").count() == 0
    partials = page.evaluate("window.__replies")
    assert len(partials) >= 3, f"the reply did not stream: {partials}"
    expect(page.locator("#conversations")).to_contain_text("What is the capital of France?")

    correction = "The capital of France is Paris."
    page.locator('#chatbot [data-testid="bot"]').first.hover()
    page.locator('#chatbot button[aria-label="Edit"]').last.click()
    page.locator("#chatbot textarea.edit-textarea").first.fill(correction)
    page.locator('#chatbot button[aria-label="Submit"]').click()
    expect(page.locator("#chat-status")).to_contain_text("saved for review")
    expect(page.locator("#chatbot")).to_contain_text("your correction is saved for review")
    expect(page.locator('#chatbot [data-testid="bot"]').first).to_contain_text(correction)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    db = make_engine(f"sqlite:///{data / 'apprentice.db'}")
    with reading(db) as s:
        demo = s.query(Demonstration).one()
        alice = s.query(User).filter_by(name="alice").one()
        reply = s.get(Message, demo.source_message_id)
    assert demo.status == "pending" and demo.author_id == alice.id
    assert demo.messages == [{"role": "user", "content": question}]
    assert demo.corrected_answer == correction
    assert demo.original_answer == reply.content and reply.model_version == "v0"
    assert reply.content.strip(), "the tiny model's reply was stored"
    db.dispose()
    assert time.time() - started < 60, "the browser test should stay under a minute"
