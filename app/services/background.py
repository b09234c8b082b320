"""The registry of one running server's background admin jobs ("Train now", evaluations): asyncio tasks whose
records (status, message, result) stay in memory for the admin to poll. app/services/jobs.py starts them."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from storage.errors import ApprenticeError, Conflict, NotFound

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
        if job_id not in self.jobs:
            raise NotFound(f"no job {job_id} (jobs are kept until the server restarts)")
        return dict(self.jobs[job_id])

    def list(self) -> list[dict[str, Any]]:
        return [dict(j) for j in sorted(self.jobs.values(), key=lambda j: -j["id"])]


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")
