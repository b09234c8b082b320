"""The admin tabs in a real browser: Playwright drives Debian's Chromium against `apprentice serve` on the tiny model.

A reviewer approves one demonstration and rejects another in the Review tab (a demonstration holding HTML and a
script is shown as text, never run; while a clicked row loads, its edit fields are locked); an admin rolls the live
version back in the Versions tab. Screenshots of every admin tab land in /tmp/apprentice-admin-*.png. Needs
/usr/bin/chromium (`make browser` installs it).

    .venv/bin/python -m pytest -q -m browser tests/test_browser_admin.py
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest

from learner.adapters import adapter_checksum
from storage import evals, rounds, users, versions
from storage.db import make_engine, reading, upgrade
from storage.demonstrations import create_demonstration
from storage.models import Demonstration
from storage.versions import ensure_base_version
from tests.serving_helpers import make_adapter
from tests.test_browser_chat import CHROMIUM, CHROMIUM_ARGS, serving

pytestmark = pytest.mark.browser

PASSWORD = "correct-horse-battery"
SHOTS = Path("/tmp")
XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2"> <b>not bold</b>'
Q = [{"role": "user", "content": "What is the capital of Zorbia?"}]
GATE_REASON = (
    "rejected: general dropped 10.8 points (47.5% -> 36.7%; margin 2); trained skill geo got worse (70.0% -> 65.0%)"
)


def seed(data: Path, model_dir: str) -> None:
    """Users, three pending demonstrations (one full of markup), v1 live with a real adapter, scores, a round, and a
    candidate v2 that the gate rejected."""
    db = make_engine(f"sqlite:///{data / 'apprentice.db'}")
    upgrade(db)
    ensure_base_version(db)
    for name, role in (("ada", "admin"), ("rex", "reviewer"), ("bob", "user")):
        users.create_user(db, name=name, role=role, password=PASSWORD)
    bob = users.get_user(db, name="bob").id
    for question, answer in [
        ("What is the capital of Zorbia?", "Quillmark is the capital of Zorbia."),
        (f"Is this safe? {XSS}", f"Shown as text: {XSS}"),
        ("2 + 2 = ?", "4"),
    ]:
        messages = [{"role": "user", "content": question}]
        create_demonstration(db, messages=messages, corrected_answer=answer, original_answer="I don't know.",
                             skill="geo", author_id=bob)  # fmt: skip
    learned = create_demonstration(db, messages=Q, corrected_answer="Quillmark.", skill="geo", status="approved")
    folder = make_adapter(model_dir, data / "versions" / "v1", seed=5)
    rnd = rounds.create_round(db, method="sdft", parent_version="v0", hyperparameters={"steps": 6}, owner="t",
                              demo_ids=[learned.id])  # fmt: skip
    rounds.mark_running(db, round_id=rnd.id)
    for step in range(1, 7):
        record = {"step": step, "loss": 2.0 / step, "kl": 1.0 / step}
        rounds.record_step(db, round_id=rnd.id, step=record, progress=step / 6)
    rounds.succeed_round(db, round_id=rnd.id, version="v1", adapter_path=folder,
                         checksum=adapter_checksum(Path(folder)), metrics={"steps": 6})  # fmt: skip
    versions.set_active(db, name="v1")
    versions.create_version(db, name="v2", adapter_path=folder, parent="v1")
    evals.record_gate(db, candidate="v2", promote=False, reason=GATE_REASON)
    for version, general, geo in (("v0", 0.40, 0.10), ("v1", 0.39, 0.70)):
        evals.record_eval(db, version=version, skills={"general": {"score": general, "n": 305},
                                                       "geo": {"score": geo, "n": 20}})  # fmt: skip
    db.dispose()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("browser-admin")
    seed(data, tiny_model_dir)
    env = {**os.environ, "APPRENTICE_HOME": str(data), "APPRENTICE_MODEL": tiny_model_dir,
           "APPRENTICE_MAX_NEW_TOKENS": "16", "APPRENTICE_LEARN_IN_SERVER": "0"}  # fmt: skip
    with serving(data, env) as url:
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


def sign_in(browser, url: str, name: str):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(url)
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#whoami")).to_contain_text(f"Signed in as {name}")
    return page


def cell(table, text: str):
    """The Dataframe cell showing `text` (a click on it selects its row)."""
    return table.locator('[data-testid^="cell-"]').filter(has_text=text).first


def statuses(data: Path) -> dict[str, tuple[str, str]]:
    db = make_engine(f"sqlite:///{data / 'apprentice.db'}")
    with reading(db) as s:
        out = {d.messages[-1]["content"]: (d.status, d.note) for d in s.query(Demonstration)}
    db.dispose()
    return out


def test_reviewer_approves_one_and_rejects_one(server, browser):
    from playwright.sync_api import expect

    url, data = server
    page = sign_in(browser, url, "rex")
    expect(page.get_by_role("tab", name="Review")).to_be_visible()
    expect(page.get_by_role("tab", name="Versions")).to_be_visible()  # reviewers compare versions
    expect(page.get_by_role("tab", name="Rounds")).to_be_hidden()  # the rest is the admins'
    page.get_by_role("tab", name="Review").click()
    table = page.locator("#review-table")
    expect(page.locator("#review-page-info")).to_contain_text("of 3")
    expect(table).to_contain_text("2 + 2 = ?")

    cell(table, "Is this safe?").click()  # open the demonstration full of markup
    detail = page.locator("#review-detail")
    expect(detail.locator(".demo-correction")).to_contain_text(f"Shown as text: {XSS}")
    assert detail.locator("script, img").count() == 0 and detail.locator("b", has_text="not bold").count() == 0
    assert page.evaluate("window.pwned") is None
    page.locator("#review-reason textarea").fill("made up <i>nonsense</i>")
    page.locator("#review-reject").click()
    expect(page.locator("#review-message")).to_contain_text("rejected (made up <i>nonsense</i>)")
    expect(page.locator("#review-page-info")).to_contain_text("of 2")

    # a slow server: hold every request until the checks below; the fields must be locked, not typed over later
    held: list = []
    page.route("**/queue/join*", lambda route: held.append(route))
    cell(table, "What is the capital of Zorbia?").click()
    correction = page.locator("#review-correction textarea")
    expect(correction).to_be_disabled()
    expect(page.locator("#review-approve")).to_be_disabled()
    assert held, "the click sent no request"
    for route in held:
        route.continue_()
    page.unroute("**/queue/join*")
    expect(correction).to_be_enabled()
    expect(correction).to_have_value("Quillmark is the capital of Zorbia.")
    expect(detail.locator(".demo-original")).to_contain_text("I don't know.")
    expect(detail.locator(".demo-correction")).to_contain_text("Quillmark is the capital of Zorbia.")
    page.locator("#review-approve").click()
    expect(page.locator("#review-message")).to_contain_text("approved")
    expect(page.locator("#review-page-info")).to_contain_text("of 1")
    page.screenshot(path=str(SHOTS / "apprentice-admin-review.png"), full_page=True)
    assert page.evaluate("window.pwned") is None

    got = statuses(data)
    assert got["What is the capital of Zorbia?"] == ("approved", "")
    assert got[f"Is this safe? {XSS}"] == ("rejected", "made up <i>nonsense</i>")
    assert got["2 + 2 = ?"] == ("pending", "")


def test_admin_rolls_back_and_sees_every_tab(server, browser):
    from playwright.sync_api import expect

    url, data = server
    user_page = sign_in(browser, url, "bob")  # a plain user: the chat only, and no handler fails on page load
    expect(user_page.get_by_role("tab", name="Chat")).to_be_visible()
    for tab in ("Review", "Versions", "Rounds", "Dashboard", "Data"):
        expect(user_page.get_by_role("tab", name=tab)).to_be_hidden()
    user_page.close()
    page = sign_in(browser, url, "ada")
    page.get_by_role("tab", name="Versions").click()
    expect(page.locator("#versions-table")).to_contain_text("active ●")
    expect(page.locator("#versions-table")).to_contain_text(GATE_REASON)  # the whole reason, wrapped in its cell
    expect(page.locator("#versions-detail")).to_contain_text("lineage: v1 ← v0")
    page.locator("#versions-rollback").click()
    expect(page.locator("#versions-message")).to_contain_text("v0 is live (was v1)")
    page.screenshot(path=str(SHOTS / "apprentice-admin-versions.png"), full_page=True)
    db = make_engine(f"sqlite:///{data / 'apprentice.db'}")
    assert versions.active_version(db).name == "v0"
    db.dispose()
    health = urllib.request.urlopen(url + "healthz", timeout=5).read().decode()
    assert '"version":"v0"' in health.replace(" ", "")  # the server's engine swapped, not only the database

    page.get_by_role("tab", name="Rounds").click()
    expect(page.locator("#rounds-table")).to_contain_text("v0 → v1")
    expect(page.locator("#rounds-plot .js-plotly-plot")).to_be_visible()
    expect(page.locator("#rounds-schedule")).to_contain_text("every 60 minutes")
    page.screenshot(path=str(SHOTS / "apprentice-admin-rounds.png"), full_page=True)

    page.get_by_role("tab", name="Dashboard").click()
    expect(page.locator("#dashboard-heatmap .js-plotly-plot")).to_be_visible()
    expect(page.locator("#dashboard-lines .js-plotly-plot")).to_be_visible()
    page.screenshot(path=str(SHOTS / "apprentice-admin-dashboard.png"), full_page=True)

    page.get_by_role("tab", name="Data").click()
    page.locator("#data-export").click()
    expect(page.locator("#data-export-result")).to_contain_text("exported 4 demonstrations")
    page.screenshot(path=str(SHOTS / "apprentice-admin-data.png"), full_page=True)
    page.wait_for_timeout(4000)  # let the rounds timer tick at least once more
    log = (data / "serve.log").read_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 200 :][:3000]
