"""What the app does, with no web framework or argument parser in it: app/api/ (REST), app/ui/ (Gradio) and
app/commands/ (the CLI) call these modules and never each other.

    chat.py       one chat turn (validate, stream, record), ratings and corrections
    review.py     review actions on demonstrations, one or many
    answers.py    model work for the admin: the teacher check of a demonstration, old-vs-new answers of a version
    queries.py    what the admin pages and API show, read from storage as plain dicts
    versions.py   the one activation rule, the hot swap, following the database's active version
    learning.py   the scheduled round's job and the one pipeline after every round (gate, activate, hot swap)
    jobs.py       "Train now" and evaluations as background jobs; background.py keeps their records
    arrival_checks.py  the teacher check of every new demonstration, in the background of `apprentice serve`
    first_run.py  the first admin account on a database without users (`apprentice serve`)
    export_model.py  a version merged into the base model as a plain transformers folder (`export-model`)
    prune.py      deleting rejected and superseded candidates' adapter folders (`versions prune`)

Here: opening what every command shares, the database (migrated on open) and the base model folder. Data import and
export are learner/exchange.py's, called as they are by the CLI, the Data tab and the admin API.
"""

from __future__ import annotations

from sqlalchemy import Engine as Database

from app.settings import Settings
from learner.model_files import resolve_model
from storage.db import make_engine, upgrade
from storage.versions import ensure_base_version


def open_database(settings: Settings) -> Database:
    """The settings' database (a SQLAlchemy Engine) with every migration applied and version 0 in place."""
    settings.prepare()
    db = make_engine(settings.db_url)
    upgrade(db)
    ensure_base_version(db)
    return db


def model_folder(settings: Settings) -> str:
    """The base model, converted into the shared cache first if it is the built-in one."""
    return resolve_model(settings.model, settings.model_cache)
