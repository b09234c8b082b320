"""One settings object for every subcommand: command-line flags override APPRENTICE_* variables override defaults.

No side effects at import; `Settings.prepare()` creates and checks the data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from learner.model_files import BUILTIN, default_cache_dir
from storage.errors import ApprenticeError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APPRENTICE_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(
        Path("./data"), validation_alias="APPRENTICE_HOME", description="Data directory (database, adapters)."
    )
    database_url: str = Field("", description="SQLAlchemy URL; default: SQLite file apprentice.db in the data dir.")
    model: str = Field(BUILTIN, description="Base model: builtin:smollm2-135m-instruct, a local folder or a Hub id.")
    model_cache: Path = Field(default_factory=default_cache_dir, description="Shared cache of converted models.")
    host: str = Field("127.0.0.1", description="Address the web server binds to.")
    port: int = Field(7860, ge=1, le=65535, description="Port the web server listens on.")

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'apprentice.db').resolve()}"

    def prepare(self) -> Settings:
        """Create the data directory and prove it is writable; a clear error otherwise."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            probe = self.data_dir / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as e:
            raise ApprenticeError(f"data directory {self.data_dir} is not writable ({e.strerror})") from e
        return self


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with the non-None `overrides` (command-line flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
