"""One activation rule for every way a version goes live (app/services/versions.activate): a version registered with
`apprentice versions add` (which records its adapter's checksum) can be made live from the command line, the admin
REST API and the admin UI's Versions tab alike; once its adapter's files change, all three refuse it with the same
clear error and the live version stays live. And a server whose active version cannot be loaded refuses to start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import gradio as gr
import httpx
import pytest
from fastapi.testclient import TestClient

from app.cli import main
from app.main import create_app
from app.services import open_database
from app.settings import Settings
from app.ui import versions as versions_tab
from learner.adapters import adapter_checksum
from storage import versions
from storage.errors import ApprenticeError
from tests.serving_helpers import make_adapter, running_server


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("activation")
    settings = Settings(data_dir=data, model=tiny_model_dir, device="cpu", max_new_tokens=8, learn_in_server=False)
    outside = tmp_path_factory.mktemp("adapters")  # adapters made elsewhere, registered by hand
    folders = {name: make_adapter(tiny_model_dir, outside / name, seed) for name, seed in (("va", 1), ("vb", 2))}
    with running_server(settings) as srv:
        yield srv, folders, ["--data-dir", str(data), "--model", tiny_model_dir]


def add(name: str, folder: str, argv: list[str], capsys) -> None:
    assert main(["versions", "add", name, "--adapter", folder, *argv]) == 0
    assert f"added candidate version {name}" in capsys.readouterr().out


def tamper(folder: str) -> None:
    (Path(folder) / "adapter_model.safetensors").write_bytes(b"not the weights it was registered with")


def activate_in_ui(srv, name: str) -> str:
    """The Versions tab's "Make live" button, as an admin: the message it shows."""
    with gr.Blocks() as demo:
        versions_tab.build(srv.state, demo)
    handlers = next(fn.fn.__self__ for fn in demo.fns.values() if fn.name == "activate")
    shown = asyncio.run(handlers.activate(name, gr.Request(username="ann")))
    return str(shown[handlers.c["message"]])


def api_activate(srv, name: str) -> httpx.Response:
    return httpx.post(f"{srv.url}/api/admin/versions/{name}/activate", headers=srv.headers("ann"), timeout=120)


def test_versions_add_records_the_checksum_and_refuses_a_folder_without_an_adapter(setup, tmp_path, capsys):
    srv, folders, argv = setup
    add("va", folders["va"], argv, capsys)
    va = versions.get_version(srv.state.db, name="va")
    assert va.status == "candidate" and va.checksum == adapter_checksum(Path(folders["va"]))
    assert main(["versions", "add", "empty", "--adapter", str(tmp_path), *argv]) == 1
    assert "is not a LoRA adapter folder" in capsys.readouterr().err


def test_an_added_version_goes_live_from_the_cli_the_api_and_the_ui(setup, capsys):
    srv, folders, argv = setup
    db = srv.state.db
    assert main(["activate", "va", *argv]) == 0
    assert "activated va (was v0)" in capsys.readouterr().out
    assert main(["activate", "v0", *argv]) == 0
    capsys.readouterr()
    assert api_activate(srv, "va").json() == {"active": "va", "previous": "v0"}
    assert srv.state.engine.active == "va"
    assert api_activate(srv, "v0").status_code == 200
    add("vb", folders["vb"], argv, capsys)
    assert "vb is live (was v0)" in activate_in_ui(srv, "vb")
    assert versions.active_version(db).name == "vb" and srv.state.engine.active == "vb"


def test_a_tampered_adapter_is_refused_by_all_three(setup, capsys):
    srv, folders, argv = setup
    db = srv.state.db
    tamper(folders["va"])
    live = versions.active_version(db).name
    assert main(["activate", "va", *argv]) == 1
    err = capsys.readouterr().err
    assert "version va is refused" in err and "does not match its recorded checksum" in err
    refused = api_activate(srv, "va")
    assert refused.status_code == 409 and "version va is refused" in refused.json()["error"]["message"]
    shown = activate_in_ui(srv, "va")
    assert "version va is refused" in shown and "does not match its recorded checksum" in shown
    assert versions.active_version(db).name == live and srv.state.engine.active == live


def test_a_server_refuses_to_start_on_an_active_version_it_cannot_load(tiny_model_dir, tmp_path):
    """The README's promise: a server whose active version cannot be loaded refuses to run and names the rollback."""
    settings = Settings(data_dir=tmp_path, model=tiny_model_dir, device="cpu", learn_in_server=False)
    db = open_database(settings)
    versions.create_version(db, name="gone", adapter_path=str(tmp_path / "deleted"), parent="v0")
    versions.set_active(db, name="gone")
    app = create_app(settings, ui=False)
    try:
        with pytest.raises(ApprenticeError, match="roll back with `apprentice activate <earlier version>`") as refused:
            with TestClient(app):
                pass
        assert "cannot serve the active version" in str(refused.value) and "deleted" in str(refused.value)
    finally:
        asyncio.run(app.state.apprentice.engine.close())
