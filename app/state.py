"""What the web app holds while it runs, handed to the API routers and the UI: no globals."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine as Database

from app.engines.base import Engine
from app.services.background import AdminJobs
from app.settings import Settings


@dataclass
class AppState:
    settings: Settings
    db: Database
    engine: Engine
    jobs: AdminJobs = field(default_factory=AdminJobs)  # background admin jobs: "Train now", evaluations
