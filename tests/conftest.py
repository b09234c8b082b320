"""Shared fixtures: a temp data dir and database, the built-in model folder, and a tiny random model built from
SmolLM2's config with its real tokenizer and chat template (for fast tests).

`database_url` (and `engine`, built on it) runs each test that takes it twice: on a SQLite file and on a fresh
PostgreSQL database (tests/postgres.py; marked `postgres`, so `-m "not postgres"` runs SQLite only)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

from learner.model_files import BUILTIN, default_cache_dir, load_tokenizer, resolve_model
from storage.db import make_engine, upgrade
from storage.versions import ensure_base_version

torch.set_num_threads(2)
# The server's background teacher check of new demonstrations would race with the tests that approve them (a flagged
# one asks for a confirmation); the tests of that check turn it on (Settings(teacher_check_on_arrival=True), or the
# variable in a server's environment).
os.environ.setdefault("APPRENTICE_TEACHER_CHECK_ON_ARRIVAL", "0")


@pytest.fixture(scope="session")
def builtin_dir() -> str:
    """The converted built-in model (the shared cache; `make model` prepared it)."""
    return resolve_model(BUILTIN, default_cache_dir())


@pytest.fixture(scope="session")
def tiny_model_dir(builtin_dir: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(builtin_dir)
    config.update(
        {
            "num_hidden_layers": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
        }
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out = tmp_path_factory.mktemp("tiny-smollm2")
    model.save_pretrained(out)
    load_tokenizer(builtin_dir).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def postgres_databases():
    """One PostgreSQL server per session (or APPRENTICE_TEST_POSTGRES_URL's), started by the first test needing it."""
    from tests.postgres import Databases, server

    given = os.environ.get("APPRENTICE_TEST_POSTGRES_URL")
    with contextlib.nullcontext(given) if given else server() as url:
        databases = Databases(url)
        yield databases
        databases.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of `database_url` and `engine`; `@pytest.mark.parametrize("backend", ["sqlite"])` on a
    test keeps it to one (where the model, not the database, is the point)."""
    return request.param


def _fresh_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path, *, migrated: bool):
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    databases = request.getfixturevalue("postgres_databases")
    url = databases.new(migrated=migrated)
    yield url
    databases.drop(url)


@pytest.fixture()
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh, empty database's URL, once per backend."""
    yield from _fresh_database(backend, request, tmp_path, migrated=False)


@pytest.fixture()
def engine(backend: str, request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh database at the head revision with the base version v0, once per backend."""
    for url in _fresh_database(backend, request, tmp_path, migrated=True):
        eng = make_engine(url)
        upgrade(eng)  # PostgreSQL's copy of the migrated template: a no-op check
        ensure_base_version(eng)
        yield eng
        eng.dispose()
