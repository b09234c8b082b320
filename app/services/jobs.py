"""Long admin work started from the admin tabs or the admin REST API, run in the background: "Train now" (a learning
round, then the evaluation gate, then the hot swap of a promoted candidate) and evaluations of a version.

Each job is an asyncio task on the server's event loop; its slow parts run in a worker thread (evaluation, the gate)
or in a spawned worker process (training, exactly like a scheduled round: learner.scheduler.scheduled_round), so
the web server stays responsive. A job's record (status, message, result) lives in memory (AppState.jobs, see
app/services/background.py) for the admin to poll; what matters lasts in the database anyway (the round, its steps,
the version, eval_results). One job of a kind at a time.

    job = await train_now(state)          # {"id", "kind", "status": "running", ...}
    job = await train_now(state, method="sft", steps=12, demo_ids=preview.demo_ids)   # steered (see the Rounds tab)
    state.jobs.get(job["id"])
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from app.services import model_folder
from app.services.learning import finish_round_live, outcome_of, round_config
from app.services.learning import learn_job as scheduled_job
from app.state import AppState
from learner.evaluate import evaluate_version
from learner.scheduler import scheduled_round
from storage import versions
from storage.errors import ApprenticeError

log = logging.getLogger(__name__)


# --- train now -----------------------------------------------------------------------------------------------------


def _round_in_worker(job: dict[str, Any]) -> dict[str, Any]:
    """One round in a spawned process, as the scheduler runs it (its memory is returned when it ends)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(scheduled_round, job).result()


def learn_job(
    state: AppState, *, method: str | None = None, steps: int | None = None, demo_ids: list[int] | None = None
) -> dict[str, Any]:
    """The scheduled round's job description, with min_demos 1 ("Train now" learns whatever is approved), a method
    and a budget (optimizer steps) over the deployment's config (app/services/learning.round_config), and only
    `demo_ids` of the waiting demonstrations when given."""
    settings = state.settings
    config = round_config(settings, method=method, steps=steps)
    return dataclasses.asdict(scheduled_job(settings, config)) | {"min_demos": 1, "demo_ids": demo_ids}


async def train_now(
    state: AppState, *, method: str | None = None, steps: int | None = None, demo_ids: list[int] | None = None
) -> dict[str, Any]:
    """Start a round now (background); then finish_round_live: the gate, and the hot swap when it promotes the
    candidate (or only the swap when learn_activate made it live at once). `method` and `steps` override the
    deployment's for this round (a bad value raises ApprenticeError before anything starts); `demo_ids` keeps the
    round to the demonstrations a preview showed (app/services/learning.preview_round)."""
    spec = learn_job(state, method=method, steps=steps, demo_ids=demo_ids)

    async def work(job: dict[str, Any]) -> dict[str, Any]:
        job["message"] = "training (see the round's progress below)"
        result = await asyncio.to_thread(_round_in_worker, spec)
        if result.get("status") in ("failed", "busy"):
            raise ApprenticeError(result.get("message") or "the round failed")
        if result.get("status") == "succeeded" and result.get("version"):
            job["message"] = f"{result['message']}; evaluating {result['version']} for the gate"
        policy = "activated" if state.settings.learn_activate else "gate"
        return (await finish_round_live(state, outcome_of(result), policy=policy)).to_json()

    return state.jobs.start("train", "a training round", work)


# --- evaluation ----------------------------------------------------------------------------------------------------


async def evaluate(state: AppState, version: str, skills: list[str] | None = None) -> dict[str, Any]:
    """Start scoring `version` on every skill (or `skills`) in the background; results land in eval_results."""

    await asyncio.to_thread(versions.get_version, state.db, name=version)  # an unknown version fails now

    async def work(job: dict[str, Any]) -> dict[str, Any]:
        job["message"] = f"evaluating {version}"
        report = await asyncio.to_thread(
            evaluate_version, state.db, model_folder(state.settings), version, skills=skills or None
        )
        scores = ", ".join(f"{s} {100 * r.score:.1f}% (n={r.n})" for s, r in report.skills.items())
        return report.to_json() | {"message": f"{version}: {scores} in {report.seconds:.0f} s"}

    return state.jobs.start("eval", f"the evaluation of {version}", work)
