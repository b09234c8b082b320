"""Learning rounds as the app runs them: the scheduled round's job from the settings, the schedule inside the web
app, and what follows a round in a server (the evaluation gate, then the hot swap of a promoted candidate).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from app.services import model_folder
from app.settings import Settings
from app.state import AppState
from learner.config import LearnerConfig
from learner.scheduler import LearnJob, start_scheduler

log = logging.getLogger(__name__)


def learn_job(settings: Settings, config: LearnerConfig, *, gate: bool = True) -> LearnJob:
    """The scheduled round of these settings; `gate=False` when the caller gates the new version itself."""
    return LearnJob(
        db_url=settings.db_url,
        data_dir=str(settings.data_dir.resolve()),
        model_dir=model_folder(settings),
        config=config.to_dict(),
        min_demos=settings.learn_min_demos,
        activate=settings.learn_activate,
        gate=gate,
        gate_config=dataclasses.asdict(settings.gate_config()),
    )


def start_learning(settings: Settings, **kwargs: Any) -> Any | None:
    """The web app's learning schedule from the settings: a started BackgroundScheduler (call .shutdown() on exit),
    or None when it is off (learn_in_server false, or neither an interval nor a cron schedule). Its rounds are not
    gated in the worker: the server gates each result (pass `on_result`, see app/main.py) and hot-swaps at once."""
    if not settings.learn_in_server or (settings.learn_interval_minutes <= 0 and not settings.learn_cron):
        return None
    return start_scheduler(
        learn_job(settings, settings.learner_config(), gate=False),
        interval_minutes=settings.learn_interval_minutes,
        cron=settings.learn_cron,
        misfire_grace_s=settings.learn_misfire_grace_s,
        **kwargs,
    )


async def gate_and_activate(state: AppState, candidate: str) -> dict[str, Any]:
    """Evaluate the candidate against the live version; promote (hot swap) or leave it rejected, with the reason."""
    from app.services.versions import activate
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


def gate_scheduled(state: AppState, loop: asyncio.AbstractEventLoop) -> Callable[[dict[str, Any]], None]:
    """After a scheduled round (reported on the scheduler's thread): the evaluation gate and, if it promotes the
    candidate, the hot swap, on the server's loop, exactly as the admin's "Train now" does. The server's job does not
    gate in its worker (start_learning), so each round is gated once; a result already gated is left alone."""

    def on_result(result: dict[str, Any]) -> None:
        log.info("scheduled learning round: %s", result.get("message"))
        decided = state.settings.learn_activate or "gate" in result
        if result.get("status") == "succeeded" and result.get("version") and not decided:
            asyncio.run_coroutine_threadsafe(gate_and_activate(state, result["version"]), loop)

    return on_result
