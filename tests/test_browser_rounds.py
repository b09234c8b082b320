"""Train now in a real browser (Playwright, Debian's Chromium) against `apprentice serve` on the tiny model: an admin
presses Train now, sees the approved demonstrations the round will take and the default budget, picks SFT and a
budget of 2 steps, and starts it; the round learns exactly what was shown (not a demonstration approved after the
preview) with the chosen method and budget, and its TensorBoard run holds its steps and then the gate's scores.
A screenshot lands in /tmp/apprentice-admin-train-now.png.

    .venv/bin/python -m pytest -q -m browser tests/test_browser_rounds.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from learner.tensorboard_events import run_folder
from storage import rounds, users
from storage.db import make_engine, upgrade
from storage.demonstrations import create_demonstration
from storage.versions import ensure_base_version
from tests.test_browser_admin import PASSWORD, SHOTS, browser, sign_in  # noqa: F401 - browser is a fixture
from tests.test_browser_chat import serving

pytestmark = pytest.mark.browser
TINY_ROUND = {"batch_size": 2, "micro_batch_size": 2, "max_new_tokens": 8, "autocast": False}


def database(data: Path):
    return make_engine(f"sqlite:///{data / 'apprentice.db'}")


def approve(db, i: int) -> int:
    messages = [{"role": "user", "content": f"What is the capital of Land{i}?"}]
    return create_demonstration(db, messages=messages, corrected_answer=f"City{i} is the capital of Land{i}.",
                                status="approved", skill="geo").id  # fmt: skip


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("browser-rounds")
    db = database(data)
    upgrade(db)
    ensure_base_version(db)
    users.create_user(db, name="ada", role="admin", password=PASSWORD)
    for i in range(2):
        approve(db, i)
    create_demonstration(db, messages=[{"role": "user", "content": "Still pending?"}], corrected_answer="Yes.")
    db.dispose()
    env = {**os.environ, "APPRENTICE_HOME": str(data), "APPRENTICE_MODEL": tiny_model_dir,
           "APPRENTICE_MAX_NEW_TOKENS": "16", "APPRENTICE_LEARN_IN_SERVER": "0",
           "APPRENTICE_LEARN_CONFIG": json.dumps(TINY_ROUND)}  # fmt: skip
    with serving(data, env) as url:
        yield url, data


def test_train_now_previews_then_trains_with_the_chosen_method_and_budget(server, browser):  # noqa: F811
    from playwright.sync_api import expect

    url, data = server
    page = sign_in(browser, url, "ada")
    page.get_by_role("tab", name="Rounds").click()
    page.locator("#rounds-train").click()
    preview = page.locator("#rounds-preview")
    expect(preview).to_contain_text("learns these 2 approved demonstration(s)")
    expect(preview).to_contain_text("#1 · What is the capital of Land0? → City0 is the capital of Land0.")
    expect(preview).to_contain_text("#2 · What is the capital of Land1?")
    expect(preview).to_contain_text("Default budget: 8 optimizer steps")  # the paper preset: 4 passes, 2 a step
    expect(preview).not_to_contain_text("Still pending")
    expect(page.locator("#rounds-steps input")).to_have_attribute("placeholder", "default: 8")
    db = database(data)
    late = approve(db, 2)  # approved after the preview: waits for the next round

    page.locator("#rounds-method input").click()
    page.get_by_role("option", name="sft").click()
    page.locator("#rounds-steps input").fill("2")
    page.screenshot(path=str(SHOTS / "apprentice-admin-train-now.png"), full_page=True)
    page.locator("#rounds-start").click()
    expect(page.locator("#rounds-message")).to_contain_text("Train now started (sft, 2 steps, demonstration(s) #1, #2)")
    expect(page.locator("#rounds-train-box")).to_be_hidden()
    expect(page.locator("#rounds-table")).to_contain_text("succeeded", timeout=240_000)

    (rnd,) = rounds.list_rounds(db)
    assert (rnd.method, rnd.hyperparameters["steps"], len(rnd.steps)) == ("sft", 2, 2)
    learned = [x.demonstration_id for x in rounds.round_demonstrations(db, round_id=rnd.id)]
    assert learned == [1, 2] and late not in learned
    expect(page.locator("#rounds-jobs")).to_contain_text("done", timeout=300_000)  # the gate has decided
    db.dispose()
    events = EventAccumulator(str(run_folder(data, rnd.id)))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(s["step"], pytest.approx(s["loss"]))
                                                                         for s in rnd.steps]  # fmt: skip
    assert [e.step for e in events.Scalars("gate/promoted")] == [2]
    log = (data / "serve.log").read_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 200 :][:3000]
