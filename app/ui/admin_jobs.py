"""Long admin work started from the admin tabs or the admin REST API, run in the background: "Train now" (a learning
round, then the evaluation gate, then the hot swap of a promoted candidate) and evaluations of a version.

Each job is an asyncio task on the server's event loop; its slow parts run in a worker thread (evaluation, the gate)
or in a spawned worker process (training, exactly like a scheduled round: learner.scheduler.scheduled_round), so
the web server stays responsive. A job's record (status, message, result) lives in memory for the admin to poll; what
matters lasts in the database anyway (the round, its steps, the version, eval_results). One job of a kind at a time.

    job = await train_now(state)          # {"id", "kind", "status": "running", ...}
    jobs_of(state).get(job["id"])
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import multiprocessing
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from app.state import AppState
from storage.errors import ApprenticeError, Conflict

log = logging.getLogger(__name__)


class AdminJobs:
    """The background jobs of one running server."""

    def __init__(self) -> None:
        self.jobs: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, asyncio.Task] = {}
        self.ids = itertools.count(1)

    def running(self, kind: str) -> dict[str, Any] | None:
        return next((j for j in self.jobs.values() if j["kind"] == kind and j["status"] == "running"), None)

    def start(self, kind: str, title: str, work: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> dict:
        """Run `work(job)` in the background; it may update job["message"] as it goes and returns the result."""
        busy = self.running(kind)
        if busy is not None:
            raise Conflict(f"{busy['title']} is still running (job {busy['id']}); wait for it to finish")
        job_id = next(self.ids)
        job = {"id": job_id, "kind": kind, "title": title, "status": "running", "message": "started",
               "result": None, "started": _now(), "finished": None}  # fmt: skip
        self.jobs[job_id] = job
        self.tasks[job_id] = asyncio.get_running_loop().create_task(self._run(job, work))
        return dict(job)

    async def _run(self, job: dict[str, Any], work: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        try:
            job["result"] = await work(job)
            job["status"], job["message"] = "done", job["result"].get("message", "done")
        except ApprenticeError as e:
            job["status"], job["message"] = "failed", str(e)
        except Exception as e:  # a background job must record its failure, not vanish with it
            log.exception("admin job %s failed", job["title"])
            job["status"], job["message"] = "failed", f"{type(e).__name__}: {e}"
        finally:
            job["finished"] = _now()
            self.tasks.pop(job["id"], None)

    def get(self, job_id: int) -> dict[str, Any]:
        from storage.errors import NotFound

        if job_id not in self.jobs:
            raise NotFound(f"no job {job_id} (jobs are kept until the server restarts)")
        return dict(self.jobs[job_id])

    def list(self) -> list[dict[str, Any]]:
        return [dict(j) for j in sorted(self.jobs.values(), key=lambda j: -j["id"])]


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")


def jobs_of(state: AppState) -> AdminJobs:
    """The server's job registry, created on first use and kept on the AppState (shared by the UI and the API)."""
    jobs = getattr(state, "admin_jobs", None)
    if jobs is None:
        jobs = AdminJobs()
        state.admin_jobs = jobs  # type: ignore[attr-defined]
    return jobs


# --- train now -----------------------------------------------------------------------------------------------------


def _round_in_worker(job: dict[str, Any]) -> dict[str, Any]:
    """One round in a spawned process, as the scheduler runs it (its memory is returned when it ends)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        from learner.scheduler import scheduled_round

        return pool.submit(scheduled_round, job).result()


def learn_job(state: AppState) -> dict[str, Any]:
    """The scheduled round's job description, with min_demos 1: "Train now" learns whatever is approved. The worker
    does not gate: `train_now` gates here (gate_and_activate), to hot-swap this server at once."""
    import dataclasses

    from app.commands.learn import learn_job as scheduled_job

    settings = state.settings
    return dataclasses.asdict(scheduled_job(settings, settings.learner_config(), gate=False)) | {"min_demos": 1}


async def train_now(state: AppState) -> dict[str, Any]:
    """Start a round now (background); then the gate, and the hot swap when it promotes the candidate."""

    async def work(job: dict[str, Any]) -> dict[str, Any]:
        job["message"] = "training (see the round's progress below)"
        result = await asyncio.to_thread(_round_in_worker, learn_job(state))
        if result.get("status") != "succeeded" or not result.get("version"):
            if result.get("status") in ("failed", "busy"):
                raise ApprenticeError(result.get("message") or "the round failed")
            return result
        if state.settings.learn_activate:  # the round made its version live at once: no gate decides
            from app.activation import sync_engine

            await sync_engine(state)
            return result | {"promoted": True, "gate": "no gate: learn_activate is on"}
        job["message"] = f"{result['message']}; evaluating {result['version']} for the gate"
        return result | await gate_and_activate(state, result["version"])

    return jobs_of(state).start("train", "a training round", work)


async def gate_and_activate(state: AppState, candidate: str) -> dict[str, Any]:
    """Evaluate the candidate against the live version; promote (hot swap) or leave it rejected, with the reason."""
    from app.services import model_folder
    from app.ui.admin_actions import activate
    from learner.gate import gate_candidate, trained_skills, verdict

    skills = await asyncio.to_thread(trained_skills, state.db, candidate)
    folder = model_folder(state.settings)
    decision = await asyncio.to_thread(
        gate_candidate,
        state.db,
        folder,
        candidate=candidate,
        trained_skills=skills,
        config=state.settings.gate_config(),
    )
    if decision.promote:
        await activate(state, candidate)
    # "gate: v3 is live (promoted: ...)" / "gate: v3 is not live (rejected: ...); `apprentice activate v3` overrides"
    return {"promoted": decision.promote, "gate": decision.reason, "message": verdict(candidate, decision)}


# --- evaluation ----------------------------------------------------------------------------------------------------


async def evaluate(state: AppState, version: str, skills: list[str] | None = None) -> dict[str, Any]:
    """Start scoring `version` on every skill (or `skills`) in the background; results land in eval_results."""
    from app.services import model_folder
    from learner.evaluate import evaluate_version
    from storage import versions

    await asyncio.to_thread(versions.get_version, state.db, name=version)  # an unknown version fails now

    async def work(job: dict[str, Any]) -> dict[str, Any]:
        job["message"] = f"evaluating {version}"
        report = await asyncio.to_thread(
            evaluate_version, state.db, model_folder(state.settings), version, skills=skills or None
        )
        scores = ", ".join(f"{s} {100 * r.score:.1f}% (n={r.n})" for s, r in report.skills.items())
        return report.to_json() | {"message": f"{version}: {scores} in {report.seconds:.0f} s"}

    return jobs_of(state).start("eval", f"the evaluation of {version}", work)
