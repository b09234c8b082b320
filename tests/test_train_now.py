"""Train now's choices, at the level of the Rounds tab's handlers (a real SQLite database, the tiny model): before
anything starts it shows the method, the default budget and the approved demonstrations the round will take; bad
choices are refused before anything starts; the method and budget reach the round by the path
`apprentice learn --now --method/--steps` takes (app/services/learning.round_config), and the round learns exactly
the demonstrations the preview showed, not one approved after it."""

from __future__ import annotations

import asyncio

import gradio as gr
import pytest

from app.commands.learn import config_from
from app.services import jobs
from app.settings import Settings
from app.state import AppState
from app.ui import rounds as rounds_tab
from learner.scheduler import scheduled_round
from storage import rounds, users
from storage.demonstrations import create_demonstration
from tests.test_rounds import add_demos

TINY_ROUND = {"batch_size": 2, "micro_batch_size": 2, "max_new_tokens": 8, "autocast": False, "device": "cpu"}
pytestmark = pytest.mark.parametrize("backend", ["sqlite"])  # the handlers and the round are the point


def app_state(engine, tiny_model_dir, tmp_path) -> AppState:
    url = engine.url.render_as_string(hide_password=False)
    settings = Settings(data_dir=tmp_path, database_url=url, model=tiny_model_dir, learn_config=TINY_ROUND)
    return AppState(settings=settings, db=engine, engine=None)  # type: ignore[arg-type]


def test_train_now_shows_its_choices_and_demonstrations_before_it_starts(engine, tiny_model_dir, tmp_path):
    for name, role in (("ann", "admin"), ("rita", "reviewer")):
        users.create_user(engine, name=name, role=role, password="password-123")
    ids = add_demos(engine, 3)
    pending = create_demonstration(engine, messages=[{"role": "user", "content": "Unreviewed?"}], corrected_answer="x")
    state = app_state(engine, tiny_model_dir, tmp_path)
    with gr.Blocks() as demo:
        h = rounds_tab.wired(state, demo)
    ann, rita = gr.Request(username="ann"), gr.Request(username="rita")

    out = asyncio.run(h.train_now(ann))
    shown = out[h.c["preview"]]
    for i, demo_id in enumerate(ids):
        assert f"#{demo_id} · What is the capital of Land{i}? → <b>The capital of Land{i} is City{i}.</b>" in shown
    assert f"#{pending.id}" not in shown and "Unreviewed" not in shown
    default = state.settings.learner_config().optimizer_steps(3)  # the preset's epochs over 3 prompts, 2 a step
    assert f"Default budget: {default} optimizer steps" in shown and "continues <b>v0</b>" in shown
    assert out[h.c["steps"]]["placeholder"] == f"default: {default}" and out[h.c["method"]]["value"] == "sdft"
    assert out[h.c["shown"]] == ids and out[h.c["box"]]["visible"] and out[h.c["start"]]["interactive"]

    refusals = [
        (("sdft", 2.5, ids), "a whole number of optimizer steps"),
        (("sdft", 0, ids), "at least 1 (not 0)"),
        (("dpo", None, ids), "method must be one of sdft, sft"),
        (("sft", None, []), "nothing to learn"),
    ]
    for args, words in refusals:
        assert words in asyncio.run(h.start(*args, ann))[h.c["message"]], args
    assert "needs the admin role" in asyncio.run(h.start("sft", 2, ids, rita))[h.c["message"]]
    assert "needs the admin role" in asyncio.run(h.train_now(rita))[h.c["message"]]
    assert rounds.list_rounds(engine) == [] and state.jobs.list() == []
    assert h.cancel()[h.c["box"]]["visible"] is False


def test_nothing_to_learn_is_said_and_start_stays_off(engine, tiny_model_dir, tmp_path):
    users.create_user(engine, name="ann", role="admin", password="password-123")
    state = app_state(engine, tiny_model_dir, tmp_path)
    with gr.Blocks() as demo:
        h = rounds_tab.wired(state, demo)
    out = asyncio.run(h.train_now(gr.Request(username="ann")))
    assert "Nothing to learn" in out[h.c["preview"]] and out[h.c["shown"]] == []
    assert out[h.c["start"]]["interactive"] is False


def test_the_method_budget_and_preview_reach_the_round(engine, tiny_model_dir, tmp_path):
    import argparse

    ids = add_demos(engine, 3)
    state = app_state(engine, tiny_model_dir, tmp_path)
    job = jobs.learn_job(state, method="sft", steps=3, demo_ids=ids[:2])
    cli = argparse.Namespace(preset=None, method="sft", steps=3, set=[])
    assert job["config"] == config_from(cli, state.settings).to_dict()  # `learn --now --method sft --steps 3`
    assert job["config"]["method"] == "sft" and job["config"]["steps"] == 3 and job["min_demos"] == 1
    add_demos(engine, 1, start=3)  # approved after the preview: waits for the next round

    result = scheduled_round(job)  # what the worker process runs
    assert result["status"] == "succeeded", result
    rnd = rounds.get_round(engine, round_id=result["round"])
    assert rnd.method == "sft" and rnd.hyperparameters["steps"] == 3 and len(rnd.steps) == 3
    learned = [x.demonstration_id for x in rounds.round_demonstrations(engine, round_id=rnd.id) if not x.replay]
    assert learned == ids[:2]
