"""The learning schedule: the job lives in the application database with max_instances=1, coalescing and a misfire
grace; it waits for enough new demonstrations; it trains in a separate worker process, which only trains:
the gate and the activation follow in the scheduler's process (app/services/learning.finish_round), also for a round
a restart left ungated."""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect

from learner.scheduler import JOB_ID, LearnJob, scheduled_round, start_scheduler
from storage import rounds, versions
from storage.errors import ApprenticeError
from tests.test_rounds import add_demos, cfg


def job(engine, tiny_model_dir, tmp_path, **kw) -> LearnJob:
    url = engine.url.render_as_string(hide_password=False)
    return LearnJob(url, str(tmp_path), tiny_model_dir, cfg(steps=1).to_dict(), **kw)


def test_job_is_persisted_with_its_safeguards(engine, tiny_model_dir, tmp_path):
    scheduler = start_scheduler(job(engine, tiny_model_dir, tmp_path), interval_minutes=30, misfire_grace_s=120)
    try:
        found = scheduler.get_job(JOB_ID)
        assert (found.max_instances, found.coalesce, found.misfire_grace_time) == (1, True, 120)
        assert found.trigger.interval.total_seconds() == 30 * 60
    finally:
        scheduler.shutdown()
    assert "apscheduler_jobs" in inspect(engine).get_table_names()
    scheduler = start_scheduler(job(engine, tiny_model_dir, tmp_path), cron="0 3 * * *")  # replaces, not adds
    try:
        assert [j.id for j in scheduler.get_jobs()] == [JOB_ID]
        assert "hour='3'" in str(scheduler.get_job(JOB_ID).trigger)
    finally:
        scheduler.shutdown()
    with pytest.raises(ApprenticeError, match="not a crontab"):
        start_scheduler(job(engine, tiny_model_dir, tmp_path), cron="every night")


def test_a_scheduled_run_waits_for_enough_new_demonstrations(engine, tiny_model_dir, tmp_path):
    add_demos(engine, 2)
    result = scheduled_round(vars(job(engine, tiny_model_dir, tmp_path, min_demos=3)))
    assert result["status"] == "waiting" and "2 new approved" in result["message"]
    assert rounds.list_rounds(engine) == []


def test_the_scheduler_trains_in_a_worker_process(engine, tiny_model_dir, tmp_path):
    add_demos(engine, 2)
    results: queue.Queue = queue.Queue()
    scheduler = start_scheduler(
        job(engine, tiny_model_dir, tmp_path, min_demos=2, activate=True), run_now=True, on_result=results.put
    )
    try:
        result = results.get(timeout=300)
    finally:
        scheduler.shutdown()
    assert result["status"] == "succeeded", result
    rnd = rounds.get_round(engine, round_id=result["round"])
    assert int(rnd.owner.split(":")[1]) != os.getpid()  # trained in the worker, not in the scheduler's process
    assert versions.active_version(engine).name == result["version"]  # learn_activate promotes at once


def test_the_worker_only_trains_and_a_restart_finds_the_round_its_gate_missed(engine, tiny_model_dir, tmp_path):
    """The pipeline after a round (app/services/learning.finish_round) runs in the scheduler's process. A process
    that stopped between the round and its gate leaves a candidate no gate judged: the next start finds it
    (`ungated`) and gates it; the verdict lands in the database."""
    from app.services.learning import finish_round, outcome_of, ungated
    from learner.gate import GateConfig
    from tests.test_gate import store_scores

    add_demos(engine, 2)
    store_scores(engine, "v0", {"general": 1.0})  # a live score the candidate cannot match
    result = scheduled_round(vars(job(engine, tiny_model_dir, tmp_path, min_demos=2)))
    assert result["status"] == "succeeded" and "gate" not in result, result
    name = result["version"]
    assert versions.get_version(engine, name=name).status == "candidate"
    # the server stops here; at its next start:
    left = ungated(engine)
    assert [o.version for o in left] == [name] and left[0].round_id == result["round"]
    done = finish_round(engine, left[0], model_folder=tiny_model_dir, gate_config=GateConfig(margin=0.1))
    assert done.gate is not None and not done.gate.promote and not done.live, done
    assert done.gate.reason.startswith("rejected: general dropped") and "margin 10)" in done.gate.reason
    assert f"gate: {name} is not live (rejected: " in done.message
    stored = versions.get_version(engine, name=name)
    assert stored.status == "rejected" and stored.reason == done.gate.reason
    assert versions.active_version(engine).name == "v0" and ungated(engine) == []
    # a round left a candidate on purpose (`learn --no-gate`) is not gated at the next start
    add_demos(engine, 2, start=2)
    kept = finish_round(engine, outcome_of(scheduled_round(vars(job(engine, tiny_model_dir, tmp_path, min_demos=2)))),
                        model_folder=tiny_model_dir, policy="candidate")  # fmt: skip
    assert kept.gate is None and versions.get_version(engine, name=kept.version).status == "candidate"
    assert ungated(engine) == []


def _sleep_as_a_worker(seconds: float) -> None:
    from learner.scheduler import exit_with_parent

    exit_with_parent()
    time.sleep(seconds)


def _start_a_worker(pid_file: str) -> None:
    import multiprocessing

    worker = multiprocessing.get_context("spawn").Process(target=_sleep_as_a_worker, args=(120,))
    worker.start()
    Path(pid_file).write_text(str(worker.pid))
    worker.join()


def test_a_worker_process_ends_when_the_process_that_started_it_is_killed(tmp_path):
    """A killed `apprentice serve` must not leave its training worker writing into the data directory."""
    import multiprocessing
    import signal

    pid_file = tmp_path / "worker.pid"
    server = multiprocessing.get_context("spawn").Process(target=_start_a_worker, args=(str(pid_file),))
    server.start()
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    os.kill(server.pid, signal.SIGKILL)
    server.join()
    deadline = time.monotonic() + 10
    while _running(worker):
        assert time.monotonic() < deadline, "the worker outlived the process that started it"
        time.sleep(0.1)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait a while for its new parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
