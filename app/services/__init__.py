"""Opening the pieces every command shares: the database (migrated on open) and the base model folder."""

from __future__ import annotations

from sqlalchemy import Engine

from app.settings import Settings
from learner.model_files import resolve_model
from storage.db import make_engine, upgrade
from storage.versions import ensure_base_version


def open_database(settings: Settings) -> Engine:
    """An engine on the settings' database with every migration applied and version 0 in place."""
    settings.prepare()
    engine = make_engine(settings.db_url)
    upgrade(engine)
    ensure_base_version(engine)
    return engine


def model_folder(settings: Settings) -> str:
    """The base model, converted into the shared cache first if it is the built-in one."""
    return resolve_model(settings.model, settings.model_cache)
