"""Everyday review in a real browser (Playwright, Debian's Chromium, `apprentice serve` on the tiny model with the
teacher check on arrival on): the background check flags a new demonstration and the queue shows and filters on it;
approving it asks for a second look; a reply rated down becomes a correction; a reviewer compares a version with its
parent; the dashboard shows each version's share of replies rated up and down. Screenshots land in
/tmp/apprentice-review-*.png. Needs /usr/bin/chromium (`make browser`).

    .venv/bin/python -m pytest -q -m browser tests/test_browser_review.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from learner.adapters import adapter_checksum
from storage import conversations, rounds, users, versions
from storage.db import make_engine, reading, upgrade
from storage.demonstrations import create_demonstration
from storage.models import Demonstration
from storage.versions import ensure_base_version
from tests.serving_helpers import make_adapter
from tests.test_browser_admin import PASSWORD, cell, sign_in
from tests.test_browser_chat import CHROMIUM, CHROMIUM_ARGS, serving

pytestmark = pytest.mark.browser

SHOTS = Path("/tmp")
Q = [{"role": "user", "content": "What is the capital of Zorbia?"}]


def rated(db, user_id: int, question: str, reply: str, version: str, rating: int, reason: str) -> int:
    conv = conversations.create_conversation(db, user_id=user_id)
    conversations.add_message(db, conversation_id=conv.id, role="user", content=question)
    m = conversations.add_message(db, conversation_id=conv.id, role="assistant", content=reply, model_version=version)
    conversations.add_feedback(db, user_id=user_id, message_id=m.id, rating=rating, reason=reason)
    return m.id


def seed(data: Path, model_dir: str) -> None:
    """Users; v1 live (a real adapter) whose round learned one demonstration; one pending demonstration (not checked
    yet); bob's rated replies: v0 one down and one up, v1 one down."""
    db = make_engine(f"sqlite:///{data / 'apprentice.db'}")
    upgrade(db)
    ensure_base_version(db)
    for name, role in (("ada", "admin"), ("rex", "reviewer"), ("bob", "user")):
        users.create_user(db, name=name, role=role, password=PASSWORD)
    bob = users.get_user(db, name="bob").id
    learned = create_demonstration(db, messages=Q, corrected_answer="Quillmark.", skill="geo", status="approved")
    folder = make_adapter(model_dir, data / "versions" / "v1", seed=5)
    rnd = rounds.create_round(db, method="sdft", parent_version="v0", hyperparameters={}, owner="t",
                              demo_ids=[learned.id])  # fmt: skip
    rounds.mark_running(db, round_id=rnd.id)
    rounds.succeed_round(db, round_id=rnd.id, version="v1", adapter_path=folder,
                         checksum=adapter_checksum(Path(folder)), metrics={"steps": 1})  # fmt: skip
    versions.set_active(db, name="v1")
    create_demonstration(db, messages=[{"role": "user", "content": "Largest moon of Brask?"}],
                         corrected_answer="Tolm is the largest moon of Brask.", original_answer="Titan.",
                         skill="astro", author_id=bob)  # fmt: skip
    rated(db, bob, "Capital of Vellor?", "Paris, I think.", "v0", -1, "made up: it is Oskar <b>town</b>")
    rated(db, bob, "2 + 2?", "4", "v0", 1, "right")
    rated(db, bob, "Colour of grass?", "Purple.", "v1", -1, "grass is green")
    db.dispose()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("browser-review")
    seed(data, tiny_model_dir)
    env = {**os.environ, "APPRENTICE_HOME": str(data), "APPRENTICE_MODEL": tiny_model_dir,
           "APPRENTICE_MAX_NEW_TOKENS": "16", "APPRENTICE_LEARN_IN_SERVER": "0",
           "APPRENTICE_TEACHER_CHECK_ON_ARRIVAL": "1", "APPRENTICE_TEACHER_CHECK_INTERVAL_S": "0.5"}  # fmt: skip
    with serving(data, env, wait_s=300) as url:
        yield url, data


@pytest.fixture()
def browser():
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make browser` (apt-get install chromium)"
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def demos(data: Path) -> dict[str, tuple[str, int | None, int | None]]:
    """Correction -> (status, author id, source message id)."""
    db = make_engine(f"sqlite:///{data / 'apprentice.db'}")
    with reading(db) as s:
        out = {d.corrected_answer: (d.status, d.author_id, d.source_message_id) for d in s.query(Demonstration)}
    db.dispose()
    return out


def choose(page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option).click()


def test_reviewer_flagged_check_ratings_and_compare(server, browser):
    from playwright.sync_api import expect

    url, data = server
    page = sign_in(browser, url, "rex")
    page.get_by_role("tab", name="Review").click()
    table = page.locator("#review-table")
    expect(table).to_contain_text("Largest moon of Brask?")
    # the background check reaches the new demonstration; the tiny model's teacher babbles, so it is flagged
    deadline = time.time() + 120
    while "teacher disagrees" not in table.inner_text():
        assert time.time() < deadline, "the background teacher check did not reach the demonstration"
        page.locator("#review-search").click()
        page.wait_for_timeout(1000)
    choose(page, "#review-check-state", "not checked yet")
    page.locator("#review-search").click()
    expect(page.locator("#review-page-info")).to_contain_text("of 0")
    choose(page, "#review-check-state", "⚑ flagged: the teacher disagrees")
    page.locator("#review-search").click()
    expect(page.locator("#review-page-info")).to_contain_text("of 1")
    expect(page.locator("#review-check")).to_contain_text("The teacher still disagrees")

    anyway = page.locator("#review-approve-anyway")
    expect(anyway).to_be_hidden()
    page.locator("#review-approve").click()
    expect(page.locator("#review-message")).to_contain_text("is flagged")
    expect(anyway).to_be_visible()
    page.screenshot(path=str(SHOTS / "apprentice-review-second-look.png"), full_page=True)
    assert demos(data)["Tolm is the largest moon of Brask."][0] == "pending"
    anyway.click()
    expect(page.locator("#review-message")).to_contain_text("approved although its teacher check flagged it")
    expect(anyway).to_be_hidden()
    assert demos(data)["Tolm is the largest moon of Brask."][0] == "approved"

    # rated down, no correction yet: newest rating first; a reviewer turns one into a correction
    info, rated_table = page.locator("#rated-info"), page.locator("#rated-table")
    expect(info).to_contain_text("2 replies rated down")
    expect(rated_table).to_contain_text("grass is green")
    cell(rated_table, "made up: it is Oskar").click()
    detail = page.locator("#rated-detail")
    expect(detail).to_contain_text("Capital of Vellor?")
    expect(detail.locator(".rated-text")).to_contain_text("Paris, I think.")
    expect(detail.locator(".rated-ratings")).to_contain_text("made up: it is Oskar <b>town</b>")  # shown as text
    page.locator("#rated-correction textarea").fill("Oskartown is the capital of Vellor.")
    page.locator("#rated-correct").click()
    expect(page.locator("#rated-message")).to_contain_text("pending in the queue above")
    expect(info).to_contain_text("1 reply rated down")
    expect(rated_table).not_to_contain_text("made up")
    page.screenshot(path=str(SHOTS / "apprentice-review-rated.png"), full_page=True)
    status, author, source = demos(data)["Oskartown is the capital of Vellor."]
    db = make_engine(f"sqlite:///{data / 'apprentice.db'}")
    assert (status, author) == ("pending", users.get_user(db, name="rex").id) and source is not None
    db.dispose()

    # reviewers compare a version with its parent; making a version live stays the admins'
    page.get_by_role("tab", name="Versions").click()
    expect(page.locator("#versions-table")).to_contain_text("active ●")
    expect(page.locator("#versions-activate")).to_be_hidden()
    expect(page.locator("#versions-rollback")).to_be_hidden()
    page.locator("#versions-compare").click()
    compared = page.locator("#version-compare")
    expect(compared).to_contain_text("Demonstrations learned", timeout=120_000)
    expect(compared.locator(".compare-item")).to_have_count(1)
    expect(compared).to_contain_text("v0 (old)")
    page.screenshot(path=str(SHOTS / "apprentice-review-compare.png"), full_page=True)


def test_dashboard_shows_ratings_per_version(server, browser):
    from playwright.sync_api import expect

    url, data = server
    page = sign_in(browser, url, "ada")
    page.get_by_role("tab", name="Dashboard").click()
    ratings = page.locator("#dashboard-ratings")
    expect(ratings).to_contain_text("Live traffic")
    rows = ratings.locator("tr")
    expect(rows.filter(has_text="v0")).to_contain_text("1 (50.0%)")  # 2 replies: one up, one down
    expect(rows.filter(has_text="v1 ● live")).to_contain_text("0 (0.0%)")
    expect(rows.filter(has_text="v1 ● live")).to_contain_text("1 (100.0%)")
    page.screenshot(path=str(SHOTS / "apprentice-review-dashboard.png"), full_page=True)
    log = (data / "serve.log").read_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 200 :][:3000]
