"""The learning schedule: an APScheduler BackgroundScheduler whose job runs `run_round` when enough newly approved
demonstrations wait. The web app starts it (`apprentice serve`), or `apprentice learn --daemon` runs it as its own
process against the same database (GPU layout: vLLM serves, the learner trains).

    scheduler = start_scheduler(LearnJob(db_url, data_dir, model_dir, config.to_dict(), min_demos=4),
                                interval_minutes=60)        # or cron="0 3 * * *"
    ...
    scheduler.shutdown()

The worker only trains: what follows a round (the promotion gate, the activation of a promoted version, a server's
hot swap) is its caller's, in the process that started the scheduler (`on_result`; app/services/learning.py), so
every path runs the same pipeline.

The job store is the application database (table apscheduler_jobs), so the schedule survives restarts. The job has
max_instances=1, coalesces missed runs into one, and runs up to `misfire_grace_s` late. It runs in a separate,
spawned worker process (one round per process, so its memory is returned when the round ends): training can never
stall the web server's event loop, and a crash in it cannot take the server down. Several schedulers on one database
are safe: the learner lease lets one round run at a time and the others report "busy".
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learner.config import LearnerConfig
from learner.rounds import recover, run_round
from storage.db import make_engine
from storage.demonstrations import count_fresh
from storage.errors import ApprenticeError, Conflict

JOB_ID = "apprentice-learn"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnJob:
    """What a scheduled round needs, as plain data (it is pickled into the job store and into the worker)."""

    db_url: str
    data_dir: str
    model_dir: str
    config: dict[str, Any]
    min_demos: int = 1
    activate: bool = False  # the new version goes live at once, ungated
    demo_ids: list[int] | None = None  # only these of the waiting demonstrations (Train now's preview); None: all


def exit_with_parent() -> None:
    """In a worker process: end it the moment the process that started it is gone, so a killed server never leaves a
    round training into its data directory (the lease then expires and the next start recovers the round)."""
    import multiprocessing
    import os
    import threading

    parent = multiprocessing.parent_process()
    if parent is None or any(t.name == "exit-with-parent" for t in threading.enumerate()):
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def scheduled_round(job: dict[str, Any]) -> dict[str, Any]:
    """The job body (runs in the worker): a round if enough fresh approved demonstrations wait; never raises."""
    exit_with_parent()

    spec = LearnJob(**{k: v for k, v in job.items() if k in LearnJob.__dataclass_fields__})  # older jobs had more
    db = make_engine(spec.db_url)
    try:
        fresh = count_fresh(db)
        if fresh < spec.min_demos:
            return {"status": "waiting", "message": f"{fresh} new approved demonstration(s); need {spec.min_demos}"}
        outcome = run_round(
            db,
            model_dir=spec.model_dir,
            data_dir=Path(spec.data_dir),
            config=LearnerConfig.from_dict(spec.config),
            activate=spec.activate,
            demo_ids=spec.demo_ids,
        )
        log.info("%s", outcome.message)
        return {"status": outcome.status, "message": outcome.message, "round": outcome.round_id,
                "version": outcome.version}  # fmt: skip
    except Conflict as e:
        return {"status": "busy", "message": str(e)}
    except ApprenticeError as e:
        log.error("scheduled learning round: %s", e)
        return {"status": "failed", "message": str(e)}
    except Exception as e:  # the worker must not die on a bug: the error is logged and the schedule goes on
        log.exception("scheduled learning round crashed")
        return {"status": "failed", "message": f"{type(e).__name__}: {e}"}
    finally:
        db.dispose()


def _trigger(interval_minutes: float, cron: str) -> Any:
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if cron:
        try:
            return CronTrigger.from_crontab(cron)
        except ValueError as e:
            raise ApprenticeError(f"learn_cron {cron!r} is not a crontab expression: {e}") from None
    if interval_minutes <= 0:
        raise ApprenticeError("no learning schedule: set learn_interval_minutes > 0 or learn_cron")
    return IntervalTrigger(minutes=interval_minutes)


def start_scheduler(
    job: LearnJob,
    *,
    interval_minutes: float = 60.0,
    cron: str = "",
    misfire_grace_s: int = 600,
    in_process: bool = False,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    run_now: bool = False,
) -> Any:
    """Recover rounds a dead process left running, then start a BackgroundScheduler with the learning job.

    `in_process` runs rounds in a worker thread instead of a worker process (tests, debugging). `on_result(result)`
    is called in the scheduler's process after each run (e.g. to hot-swap a new active version). `run_now` also
    schedules a run at once."""
    import datetime as dt

    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
    from apscheduler.executors.pool import ProcessPoolExecutor, ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    trigger = _trigger(interval_minutes, cron)
    db = make_engine(job.db_url)
    recover(db, Path(job.data_dir))
    executor = ThreadPoolExecutor(1) if in_process else ProcessPoolExecutor(1, pool_kwargs={"max_tasks_per_child": 1})
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=db)},
        executors={"default": executor},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": misfire_grace_s},
        timezone=dt.UTC,
    )
    scheduler.add_job(
        scheduled_round,
        trigger,
        args=[dataclasses.asdict(job)],
        id=JOB_ID,
        name="learning round",
        replace_existing=True,
        **({"next_run_time": dt.datetime.now(dt.UTC)} if run_now else {}),
    )
    if on_result is not None:

        def listener(event: Any) -> None:
            if event.job_id != JOB_ID:
                return
            result = event.retval if event.exception is None else {"status": "failed", "message": str(event.exception)}
            on_result(result)

        scheduler.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.start()
    return scheduler
