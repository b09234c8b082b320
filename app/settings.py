"""One settings object for every subcommand: command-line flags override APPRENTICE_* variables override defaults.

No side effects at import; `Settings.prepare()` creates and checks the data directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from learner.config import LearnerConfig, default_preset
from learner.gate import GateConfig
from learner.model_files import BUILTIN, default_cache_dir
from storage.errors import ApprenticeError

if TYPE_CHECKING:  # learner.gate imports the evaluator (torch): not at every command's start
    from learner.gate import GateConfig


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

    admin_password: SecretStr = Field(
        SecretStr(""),
        description="Password of the first admin, `admin`, that `apprentice serve` creates when the database has no "
        "user; unset: a generated one, printed once in the server's log.",
    )

    # serving
    engine: Literal["transformers", "vllm"] = Field(
        "transformers", description="Inference engine: embedded transformers, or a client of an external vLLM server."
    )
    device: str = Field("auto", description="Device of the embedded engine: auto (CUDA when present), cpu, cuda[:N].")
    threads: int = Field(
        0,
        ge=0,
        description="CPU threads for generation; 0: one less than the cores (at least 1), leaving the web "
        "server a core (with all cores, the server's own work stalls generation several-fold).",
    )
    max_input_tokens: int = Field(4096, ge=16, description="Longest prompt (chat template included) in tokens.")
    max_new_tokens: int = Field(1024, ge=1, description="Most tokens one reply may generate (max_tokens cap).")
    max_concurrent_generations: int = Field(8, ge=1, description="Replies generated at once (one batch); more wait.")
    max_queued_requests: int = Field(64, ge=0, description="Requests waiting for a slot before new ones get 503.")
    request_timeout: float = Field(300.0, gt=0, description="Seconds a request may take, waiting included.")
    max_requests_per_user: int = Field(
        16,
        ge=1,
        description="Replies one user may have generating or waiting (each prompt of a /v1/completions list counts); "
        "more get 503, and a list of more prompts than this is refused.",
    )
    version_poll_seconds: float = Field(
        2.0, gt=0, description="How often the server checks the database's active version and hot-swaps to it."
    )
    adapter_roots: str = Field(
        "",
        description="Folders besides <data dir>/versions that POST /v1/load_lora_adapter may load from "
        "(separated by ':'); an adapter anywhere else is refused.",
    )
    vllm_url: str = Field(
        "http://127.0.0.1:8000",
        description="Base URL of the external vLLM server (engine=vllm); several, comma-separated: every version is "
        "loaded on each before it goes live and requests are spread across them.",
    )
    vllm_api_key: str = Field("", description="API key sent to the vLLM server, if it wants one.")
    vllm_base_model: str = Field(
        "v0", description="Name vLLM serves the base model under (its --served-model-name); it is version v0."
    )

    # learning (learner/; `apprentice learn`)
    learn_method: Literal["sdft", "sft"] = Field("sdft", description="Training method of scheduled and CLI rounds.")
    learn_preset: str = Field(
        "", description="Learner preset: builtin, 4b or paper; default: builtin for the built-in model, else paper."
    )
    learn_config: dict[str, Any] = Field(
        default_factory=dict,
        description="LearnerConfig fields over the preset, as JSON, e.g. APPRENTICE_LEARN_CONFIG='{\"steps\": 40}'.",
    )
    learn_interval_minutes: float = Field(
        60.0, ge=0, description="Minutes between scheduled rounds (0: no interval schedule; see learn_cron)."
    )
    learn_cron: str = Field("", description="Crontab schedule for rounds ('0 3 * * *'); replaces the interval.")
    learn_min_demos: int = Field(
        4, ge=1, description="A scheduled round starts only with at least this many newly approved demonstrations."
    )
    learn_activate: bool = Field(
        False, description="Make a scheduled round's version live at once, without the promotion gate."
    )
    learn_in_server: bool = Field(
        True, description="Run the learning scheduler inside `apprentice serve` (off when `learn --daemon` runs)."
    )
    learn_misfire_grace_s: int = Field(600, ge=1, description="A scheduled round late by up to this still runs.")

    # review
    review_forbid_self_approval: bool = Field(
        False,
        description="Refuse a reviewer's approval of a correction they wrote or last edited (another reviewer "
        "approves it).",
    )
    teacher_check_on_arrival: bool = Field(
        True,
        description="Run the teacher check of every demonstration waiting for review in the background "
        "(`apprentice serve`; one at a time, beside chat).",
    )
    teacher_check_batch: int = Field(4, ge=1, description="Demonstrations the background teacher check takes per pass.")
    teacher_check_interval_s: float = Field(
        10.0, gt=0, description="Seconds between the background teacher check's passes when it has caught up."
    )

    # the promotion gate after every round (learner/gate.py)
    gate_margin: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Largest score drop (0..1; 0.02 = 2 points) the gate allows on a skill the round did not train on.",
    )
    gate_min_probes: int = Field(
        20, ge=1, description="The margin rule applies only to skills with at least this many probes (less is noise)."
    )

    def learner_config(self, **overrides: Any) -> LearnerConfig:
        """The LearnerConfig of this deployment: preset, then learn_method and learn_config, then `overrides`."""
        preset = self.learn_preset or default_preset(self.model)
        return LearnerConfig.preset(preset, **{"method": self.learn_method, **self.learn_config, **overrides})

    def gate_config(self) -> GateConfig:
        """The promotion gate's rules of this deployment."""

        return GateConfig(margin=self.gate_margin, min_probes=self.gate_min_probes)

    def adapter_folders(self) -> list[Path]:
        """Where adapters may be loaded from through the API: the versions folder and `adapter_roots`."""
        extra = [Path(p) for p in self.adapter_roots.split(os.pathsep) if p.strip()]
        return [(self.data_dir / "versions").resolve(), *(p.resolve() for p in extra)]

    def generation_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 2) - 1)

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
