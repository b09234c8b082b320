"""ORM tables. Schema changes need a new Alembic revision in storage/migrations/versions/."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


ROLES = ("admin", "reviewer", "user")
DEMO_STATUSES = ("pending", "approved", "rejected", "held_out")
VERSION_STATUSES = ("candidate", "active", "retired", "rejected")
ROUND_STATUSES = ("queued", "running", "succeeded", "failed")
GRADERS = ("exact", "contains", "regex", "choice")


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    disabled: Mapped[bool] = mapped_column(default=False, server_default=false())  # no sign-in, no key, no session
    last_sign_in: Mapped[dt.datetime | None] = mapped_column(DateTime)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_used: Mapped[dt.datetime | None] = mapped_column(DateTime)  # to the minute (see storage.users)
    revoked: Mapped[dt.datetime | None] = mapped_column(DateTime)  # a revoked key authenticates nobody
    user: Mapped[User] = relationship()


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    messages: Mapped[list[Message]] = relationship(order_by="Message.position", cascade="all, delete-orphan")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("conversation_id", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(120))
    response_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Feedback(Base):
    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    rating: Mapped[int] = mapped_column(Integer)  # +1 or -1
    reason: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Skill(Base):
    __tablename__ = "skills"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class Demonstration(Base):
    __tablename__ = "demonstrations"
    id: Mapped[int] = mapped_column(primary_key=True)
    messages: Mapped[list[Any]] = mapped_column(JSON)  # the conversation up to and including the user turn
    original_answer: Mapped[str] = mapped_column(Text, default="")
    corrected_answer: Mapped[str] = mapped_column(Text)
    skill: Mapped[str | None] = mapped_column(String(80), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    source_message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reviewed: Mapped[dt.datetime | None] = mapped_column(DateTime)
    note: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)


class DemonstrationEdit(Base):
    """One edit of a demonstration: who, when, and each changed field as [before, after] (storage/demo_history.py)."""

    __tablename__ = "demonstration_edits"
    id: Mapped[int] = mapped_column(primary_key=True)
    demonstration_id: Mapped[int] = mapped_column(ForeignKey("demonstrations.id", ondelete="CASCADE"), index=True)
    editor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Probe(Base):
    __tablename__ = "probes"
    id: Mapped[int] = mapped_column(primary_key=True)
    skill: Mapped[str] = mapped_column(String(80), index=True)
    messages: Mapped[list[Any]] = mapped_column(JSON)
    answer: Mapped[str] = mapped_column(Text)
    grader: Mapped[str] = mapped_column(String(16))
    choices: Mapped[list[Any] | None] = mapped_column(JSON)
    category: Mapped[str] = mapped_column(String(40), default="")  # a finer grouping inside a skill, for reports
    source: Mapped[str] = mapped_column(String(40), default="import")  # builtin | import | demonstration:<id>
    external_id: Mapped[str | None] = mapped_column(String(80), unique=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    parent: Mapped[str | None] = mapped_column(String(120))
    adapter_path: Mapped[str | None] = mapped_column(Text)  # None for version 0, the base model
    checksum: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="candidate", index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("training_rounds.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    activated: Mapped[dt.datetime | None] = mapped_column(DateTime)


class TrainingRound(Base):
    __tablename__ = "training_rounds"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    method: Mapped[str] = mapped_column(String(16))
    parent_version: Mapped[str | None] = mapped_column(String(120))
    version: Mapped[str | None] = mapped_column(String(120))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    steps: Mapped[list[Any]] = mapped_column(JSON, default=list)  # per optimizer step: loss, kl, grad_norm, ...
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str] = mapped_column(String(120), default="")  # host:pid of the process running it
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started: Mapped[dt.datetime | None] = mapped_column(DateTime)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime)


class RoundDemonstration(Base):
    __tablename__ = "round_demonstrations"
    round_id: Mapped[int] = mapped_column(ForeignKey("training_rounds.id", ondelete="CASCADE"), primary_key=True)
    demonstration_id: Mapped[int] = mapped_column(ForeignKey("demonstrations.id", ondelete="CASCADE"), primary_key=True)
    replay: Mapped[bool] = mapped_column(default=False)
    answer: Mapped[str] = mapped_column(Text, server_default="")  # the corrected answer as this round trained on it


class EvalResult(Base):
    __tablename__ = "eval_results"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(120), index=True)
    skill: Mapped[str] = mapped_column(String(80))
    score: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Lease(Base):
    """A named lock with an expiry, shared by all processes on the database (one learner round at a time)."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(120))
    expires: Mapped[dt.datetime] = mapped_column(DateTime)


class TeacherCheck(Base):
    """What a version answered to a demonstration's question without it (student) and with it in context (the SDFT
    teacher prompt), and how close each answer came to the correction (0..1). Written by the review queue."""

    __tablename__ = "teacher_checks"
    id: Mapped[int] = mapped_column(primary_key=True)
    demonstration_id: Mapped[int] = mapped_column(ForeignKey("demonstrations.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(120))
    correction: Mapped[str] = mapped_column(Text)  # the correction as it was checked (it may be edited later)
    student_answer: Mapped[str] = mapped_column(Text)
    teacher_answer: Mapped[str] = mapped_column(Text)
    student_agreement: Mapped[float] = mapped_column(Float)
    teacher_agreement: Mapped[float] = mapped_column(Float)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
