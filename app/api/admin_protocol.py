"""Request and response models of the admin REST API (/api/admin); app/api/admin.py serves them.

The shapes follow app/services/queries.py, which builds the same data for the admin tabs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from app.api.protocol import RequestModel

MAX_ID = 2**63 - 1  # the database's integer range: a larger id is malformed (400), not merely unknown (404)
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


class Message(BaseModel):
    role: str
    content: str


class TeacherCheckOut(BaseModel):
    version: str
    correction: str = Field(description="The correction as it was when checked.")
    student_answer: str = Field(description="The live version's greedy answer without the demonstration.")
    teacher_answer: str = Field(description="Its answer with the demonstration in the SDFT teacher prompt.")
    student_agreement: float = Field(description="0..1 agreement of the student answer with the correction.")
    teacher_agreement: float = Field(description="0..1 agreement of the teacher answer with the correction.")
    teacher_disagrees: bool = Field(description="Flag: the teacher answer still disagrees with the correction.")
    already_known: bool = Field(description="The student answer already agrees: little to learn.")
    correction_changed: bool = Field(False, description="The correction was edited after this check.")
    created: str | None = None


class DemonstrationOut(BaseModel):
    id: int
    status: str
    skill: str | None
    author: str | None
    reviewer: str | None
    created: str | None
    reviewed: str | None
    note: str
    messages: list[Message]
    question: str
    original_answer: str
    corrected_answer: str
    teacher_check: TeacherCheckOut | None = None
    flagged: bool = Field(
        False, description="The teacher check of the correction as it reads now disagrees: approval needs confirming."
    )


class QueuePageOut(BaseModel):
    total: int = Field(description="Demonstrations matching the filter, on all pages.")
    first_index: int = Field(description="0-based position of the first item among all matches (newest first).")
    older: int | None = Field(description="Pass as `before` for the next (older) page; null on the last page.")
    newer: int | None = Field(description="Pass as `after` for the previous (newer) page; null on the first page.")
    items: list[DemonstrationOut]


class RatedReplyOut(BaseModel):
    feedback_id: int
    message_id: int = Field(description="The reply's id: POST /ratings/{message_id}/correction corrects it.")
    version: str | None = Field(description="The version that wrote the reply.")
    user: str
    reason: str
    rated: str | None
    question: str = Field(description="The user turn the reply answered.")
    reply: str


class RatedPageOut(BaseModel):
    total: int = Field(description="Replies whose latest rating is down and that no demonstration came from.")
    older: int | None = Field(description="Pass as `before` for the next, older page; null on the last one.")
    items: list[RatedReplyOut]


class RatedCorrectionIn(RequestModel):
    correction: str = Field(description="What the reply should have said.")
    skill: str | None = Field(None, description="The demonstration's skill.")


class RejectIn(RequestModel):
    reason: str = Field("", description="Why it was rejected (kept with the demonstration).")


class EditIn(RequestModel):
    corrected_answer: str | None = Field(None, description="The new correction.")
    skill: str | None = Field(None, description="The new skill; '' clears it.")


class HoldOutIn(RequestModel):
    skill: str | None = Field(None, description="The probe's skill (default: the demonstration's).")
    grader: Literal["exact", "contains", "regex", "choice"] | None = Field(
        None,
        description="Default: 'choice' between the correction and the original reply when there is one, else "
        "'contains' with the correction.",
    )
    answer: str | None = Field(None, description="Reference answer (default: the correction).")


class HoldOutOut(BaseModel):
    demonstration: DemonstrationOut
    probe_id: int
    skill: str
    grader: str


class BulkIn(RequestModel):
    ids: list[Id] = Field(min_length=1, max_length=500)
    action: Literal["approve", "reject", "hold_out"]
    reason: str = ""
    skill: str | None = None
    confirm_flagged: bool = Field(False, description="approve flagged demonstrations too (after a second look)")


class BulkFailure(BaseModel):
    id: int
    error: str


class BulkOut(BaseModel):
    done: list[int]
    failed: list[BulkFailure]


class VersionOut(BaseModel):
    name: str
    status: str
    parent: str | None
    round: int | None
    method: str
    demonstrations: int = Field(description="Demonstrations its round learned (new, not replayed).")
    replayed: int
    created: str | None
    activated: str | None
    reason: str = Field(description="The gate's verdict, when it decided on this version.")
    adapter_path: str | None
    scores: dict[str, float] = Field(description="Latest score per skill, 0..1.")


class LearnedDemo(BaseModel):
    id: int
    skill: str | None
    status: str
    question: str
    corrected_answer: str
    replay: bool


class VersionDetailOut(VersionOut):
    lineage: list[str] = Field(description="This version, its parent, ... back to the base.")
    learned: list[LearnedDemo]


class ActivateOut(BaseModel):
    active: str
    previous: str


class ComparePair(BaseModel):
    kind: Literal["probe", "demonstration"]
    skill: str | None
    question: str
    reference: str
    old: str
    new: str
    probe_id: int | None = None
    id: int | None = None
    old_correct: bool | None = None
    new_correct: bool | None = None
    old_agreement: float | None = None
    new_agreement: float | None = None


class CompareOut(BaseModel):
    version: str
    parent: str
    probes: list[ComparePair]
    demonstrations: list[ComparePair]


class RoundOut(BaseModel):
    id: int
    status: str
    method: str
    parent: str | None
    version: str | None
    progress: float
    steps_done: int
    demonstrations: int
    replayed: int
    loss: float | None
    kl: float | None
    error: str
    created: str | None
    started: str | None
    finished: str | None
    seconds: float | None
    metrics: dict[str, Any]


class RoundDetailOut(RoundOut):
    steps: list[dict[str, Any]]
    hyperparameters: dict[str, Any]


class JobOut(BaseModel):
    id: int
    kind: str
    title: str
    status: Literal["running", "done", "failed"]
    message: str
    result: dict[str, Any] | None
    started: str
    finished: str | None


class EvaluateIn(RequestModel):
    version: str | None = Field(None, description="Default: the live version.")
    skills: list[str] | None = Field(None, description="Default: every skill.")


class ScoresOut(BaseModel):
    versions: list[dict[str, Any]]
    skills: list[str]
    general: list[str]
    base: str | None
    score: dict[str, dict[str, float | None]]
    n: dict[str, dict[str, int | None]]
    vs_base: dict[str, dict[str, float | None]]
    vs_best: dict[str, dict[str, float | None]]
    best: dict[str, float | None]


class ImportOut(BaseModel):
    kind: str
    lines: int
    added: int
    updated: int
    unchanged: int
    bad: list[list[int | str]] = Field(description="[line number, reason] of every refused line.")
    landed: bool = Field(description="False when strict refused the whole file.")
    summary: str


class ScheduleOut(BaseModel):
    method: str
    preset: str
    interval_minutes: float
    cron: str
    min_demos: int
    activate: bool
    in_server: bool
    waiting_demonstrations: int = Field(description="approved, not learned yet, not in the round in progress")
    round_running: int | None = Field(description="id of the round in progress (queued or running), if any")
