"""The admin REST API (/api/admin) on our real server (uvicorn, tiny model, SQLite): every endpoint refused to
anonymous callers and users (reviewers get the review actions only), review actions and their conflicts, the
teacher check, versions (promote, roll back, compare), rounds with "Train now" through the gate, evaluations,
import/export, and the review queue's pages at 100k rows.

    .venv/bin/python -m pytest -q tests/test_admin_api.py -s      # -s prints the 100k-row timings
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import httpx
import pytest
from sqlalchemy import insert

from app.api import admin
from app.services.answers import agreement
from app.settings import Settings
from learner.adapters import adapter_checksum
from storage import evals, rounds, users, versions
from storage.demonstrations import create_demonstration
from storage.models import Demonstration
from storage.probes import list_probes
from storage.queue import QueueFilter, queue_page
from tests.serving_helpers import make_adapter, running_server

Q = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Zorbia? <b>bold?</b>"}]
TINY_ROUND = {"steps": 2, "batch_size": 2, "micro_batch_size": 2, "max_new_tokens": 8, "autocast": False}


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("admin-api")
    settings = Settings(data_dir=data, model=tiny_model_dir, device="cpu", max_new_tokens=24, learn_config=TINY_ROUND)
    with running_server(settings) as srv:
        users.create_user(srv.state.db, name="rita", role="reviewer", password="password-123")
        srv.keys["rita"] = users.create_api_key(srv.state.db, name="rita")
        yield srv


def call(srv, method: str, path: str, user: str | None = "ann", **kw) -> httpx.Response:
    headers = {**(srv.headers(user) if user else {}), **kw.pop("headers", {})}
    return httpx.request(method, srv.url + path, headers=headers, timeout=120, **kw)


def new_demo(db, answer: str = "Quillmark", *, author: str | None = "bob", skill: str | None = "geo") -> int:
    author_id = users.get_user(db, name=author).id if author else None
    return create_demonstration(
        db, messages=Q, corrected_answer=answer, original_answer="I do not know.", skill=skill, author_id=author_id
    ).id


def register(db, data_dir, tiny_model_dir, name: str, parent: str, demo_ids: list[int], seed: int) -> str:
    """A real LoRA version (random weights) registered the way a round registers one."""
    folder = make_adapter(tiny_model_dir, data_dir / "versions" / name, seed)
    rnd = rounds.create_round(
        db, method="sdft", parent_version=parent, hyperparameters={}, owner="t", demo_ids=demo_ids
    )
    rounds.mark_running(db, round_id=rnd.id)
    rounds.record_step(db, round_id=rnd.id, step={"step": 1, "loss": 1.0, "kl": 0.5}, progress=1.0)
    rounds.succeed_round(db, round_id=rnd.id, version=name, adapter_path=folder,
                         checksum=adapter_checksum(data_dir / "versions" / name), metrics={"steps": 1})  # fmt: skip
    return folder


# --- roles ---------------------------------------------------------------------------------------------------------

REVIEW_PATHS = re.compile(r"^/api/admin/(demonstrations|ratings)")
VERSION_READS = re.compile(r"^/api/admin/versions/v0(/compare)?$|^/api/admin/versions$")  # GET: reviewers compare


def admin_routes() -> list[tuple[str, str]]:
    out = []
    for route in admin.router.routes:
        for method in sorted(route.methods):
            path = route.path.format(demo_id=1, name="v0", round_id=1, job_id=1, message_id=1)
            out.append((method, path))
    return out


def test_every_endpoint_is_in_the_openapi_spec_and_refused_to_the_wrong_people(server):
    spec = httpx.get(server.url + "/openapi.json").json()["paths"]
    routes = admin_routes()
    assert len(routes) >= 20
    for route in admin.router.routes:
        assert route.path in spec and all(m.lower() in spec[route.path] for m in route.methods), route.path
    for method, path in routes:
        anonymous = call(server, method, path, user=None)
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        assert anonymous.json()["error"]["type"] == "authentication_error"
        as_user = call(server, method, path, user="bob")
        assert as_user.status_code == 403, (method, path, as_user.text)
        as_reviewer = call(server, method, path, user="rita")
        if REVIEW_PATHS.match(path) or (method == "GET" and VERSION_READS.match(path)):
            assert as_reviewer.status_code not in (401, 403), (method, path, as_reviewer.text)
        else:
            assert as_reviewer.status_code == 403, (method, path, as_reviewer.text)
    bad_key = httpx.get(server.url + "/api/admin/versions", headers={"Authorization": "Bearer apk-nope"})
    assert bad_key.status_code == 401


# --- review --------------------------------------------------------------------------------------------------------


def test_review_actions_conflicts_and_filters(server):
    db = server.state.db
    a, b, c, d, e = (new_demo(db, f"Quillmark {i}") for i in range(5))
    other = new_demo(db, "Paris", author="eve", skill="capitals")

    page = call(server, "GET", "/api/admin/demonstrations", "rita", params={"limit": 3}).json()
    assert [x["id"] for x in page["items"]][:3] == [other, e, d] and page["older"] == d and page["newer"] is None
    item = page["items"][1]
    assert item["author"] == "bob" and item["messages"] == Q and item["original_answer"] == "I do not know."
    nxt = call(server, "GET", "/api/admin/demonstrations", "rita", params={"limit": 3, "before": page["older"]})
    assert [x["id"] for x in nxt.json()["items"]][:2] == [c, b] and nxt.json()["first_index"] == 3
    back = call(server, "GET", "/api/admin/demonstrations", "rita", params={"limit": 3, "after": c}).json()
    assert [x["id"] for x in back["items"]] == [other, e, d]

    approved = call(server, "POST", f"/api/admin/demonstrations/{a}/approve", "rita").json()
    assert approved["status"] == "approved" and approved["reviewer"] == "rita"
    again = call(server, "POST", f"/api/admin/demonstrations/{a}/approve", "ann")
    assert again.status_code == 409 and "already approved" in again.json()["error"]["message"]
    rejected = call(server, "POST", f"/api/admin/demonstrations/{b}/reject", "rita", json={"reason": "wrong <i>"})
    assert rejected.json()["status"] == "rejected" and rejected.json()["note"] == "wrong <i>"
    edited = call(server, "PATCH", f"/api/admin/demonstrations/{c}", "rita",
                  json={"corrected_answer": "Quillmark, on the coast.", "skill": "geography"})  # fmt: skip
    assert (edited.json()["corrected_answer"], edited.json()["skill"]) == ("Quillmark, on the coast.", "geography")
    held = call(server, "POST", f"/api/admin/demonstrations/{c}/hold-out", "rita").json()
    assert held["demonstration"]["status"] == "held_out" and held["grader"] == "choice"
    assert any(p.id == held["probe_id"] and p.skill == "geography" for p in list_probes(db))
    bulk = call(server, "POST", "/api/admin/demonstrations/bulk", "rita", json={"ids": [d, a], "action": "approve"})
    assert bulk.json()["done"] == [d] and bulk.json()["failed"][0]["id"] == a
    missing = call(server, "POST", "/api/admin/demonstrations/999999/approve", "rita")
    assert missing.status_code == 404

    def ids(**params):
        got = call(server, "GET", "/api/admin/demonstrations", "ann", params={"limit": 100, **params})
        assert got.status_code == 200, got.text
        return [x["id"] for x in got.json()["items"]]

    assert ids(author="eve") == [other] and ids(skill="capitals") == [other]
    assert ids(status="rejected") == [b] and ids(status="any", text="on the coast") == [c]
    assert e in ids(since=dt.date.today().isoformat()) and ids(until="2000-01-01") == []
    assert call(server, "GET", "/api/admin/demonstrations", "ann", params={"status": "nope"}).status_code == 400
    assert call(server, "GET", "/api/admin/demonstrations", "ann", params={"since": "May"}).status_code == 400


def test_agreement_scores_answers_against_the_correction():
    assert agreement("Sure! The capital of Zorbia is Quillmark.", "the capital of zorbia is  Quillmark.") == 1.0
    assert agreement("Quillmark", "The capital of Zorbia is Quillmark.") == pytest.approx(0.5)
    assert agreement("I am not sure.", "The capital of Zorbia is Quillmark.") == 0.0


def test_teacher_check_runs_the_live_model_with_and_without_the_demonstration(server):
    demo_id = new_demo(server.state.db, "Quillmark is the capital of Zorbia.")
    got = call(server, "POST", f"/api/admin/demonstrations/{demo_id}/teacher-check", "rita")
    assert got.status_code == 200, got.text
    check = got.json()["teacher_check"]
    assert check["version"] == "v0" and check["correction"] == "Quillmark is the capital of Zorbia."
    assert isinstance(check["student_answer"], str) and isinstance(check["teacher_answer"], str)
    # the tiny random model babbles: its teacher answer cannot agree with the correction, so the demo is flagged
    assert check["teacher_disagrees"] is True and check["teacher_agreement"] < 0.5
    listed = call(server, "GET", "/api/admin/demonstrations", "rita", params={"limit": 1}).json()["items"][0]
    assert listed["id"] == demo_id and listed["teacher_check"]["teacher_disagrees"] is True
    unchecked = new_demo(server.state.db, "Not checked yet.")
    flagged = call(server, "GET", "/api/admin/demonstrations", "rita", params={"flagged": "true"}).json()["items"]
    assert [x["id"] for x in flagged] == [demo_id] and unchecked != demo_id
    call(server, "PATCH", f"/api/admin/demonstrations/{demo_id}", "rita", json={"corrected_answer": "Quillmark."})
    again = call(server, "GET", f"/api/admin/demonstrations/{demo_id}", "rita").json()["teacher_check"]
    assert again["correction_changed"] is True


def test_approving_a_flagged_demonstration_needs_confirm_flagged(server):
    db = server.state.db
    demo_id, other = new_demo(db, "Quillmark, as checked."), new_demo(db, "Quillmark, unchecked.")
    checked = call(server, "POST", f"/api/admin/demonstrations/{demo_id}/teacher-check", "rita").json()
    assert checked["flagged"] is True  # the tiny model's teacher babbles
    listed = call(server, "GET", "/api/admin/demonstrations", "rita", params={"check": "flagged"}).json()["items"]
    assert demo_id in [x["id"] for x in listed] and other not in [x["id"] for x in listed]
    unchecked = call(server, "GET", "/api/admin/demonstrations", "rita", params={"check": "unchecked"}).json()
    assert other in [x["id"] for x in unchecked["items"]] and demo_id not in [x["id"] for x in unchecked["items"]]
    assert call(server, "GET", "/api/admin/demonstrations", "rita", params={"check": "maybe"}).status_code == 400
    refused = call(server, "POST", f"/api/admin/demonstrations/{demo_id}/approve", "rita")
    assert refused.status_code == 409 and "is flagged" in refused.json()["error"]["message"], refused.text
    bulk = call(server, "POST", "/api/admin/demonstrations/bulk", "rita", json={"ids": [demo_id], "action": "approve"})
    assert bulk.json()["done"] == [] and "flagged" in bulk.json()["failed"][0]["error"]
    done = call(server, "POST", f"/api/admin/demonstrations/{demo_id}/approve", "rita",
                params={"confirm_flagged": "true"})  # fmt: skip
    assert done.status_code == 200 and done.json()["status"] == "approved", done.text
    assert call(server, "POST", f"/api/admin/demonstrations/{other}/approve", "rita").status_code == 200


def test_a_reply_rated_down_becomes_a_reviewers_correction(server):
    asked = {"messages": [{"role": "user", "content": "Capital of Vellor?"}], "max_tokens": 4}
    reply = call(server, "POST", "/v1/chat/completions", "eve", json=asked).json()
    verdict = {"response_id": reply["id"], "rating": -1, "reason": "it is Oskartown"}
    rated = call(server, "POST", "/v1/feedback", "eve", json=verdict)
    assert rated.status_code == 200, rated.text
    listed = call(server, "GET", "/api/admin/ratings/rated-down", "rita").json()
    item = next(x for x in listed["items"] if x["reason"] == "it is Oskartown")
    assert item["user"] == "eve" and item["question"] == "Capital of Vellor?" and item["version"] == "v0"
    path = f"/api/admin/ratings/{item['message_id']}/correction"
    assert call(server, "POST", path, "rita", json={"correction": " "}).status_code == 400
    made = call(server, "POST", path, "rita", json={"correction": "Oskartown.", "skill": "geo"})
    assert made.status_code == 200, made.text
    demo = made.json()
    assert (demo["status"], demo["author"], demo["corrected_answer"]) == ("pending", "rita", "Oskartown.")
    assert (
        demo["question"] == "Capital of Vellor?"
        and demo["original_answer"] == reply["choices"][0]["message"]["content"]
    )
    again = call(server, "GET", "/api/admin/ratings/rated-down", "rita").json()
    assert item["message_id"] not in [x["message_id"] for x in again["items"]]
    assert call(server, "POST", path, "rita", json={"correction": "Twice."}).status_code == 409
    exported = call(server, "GET", "/api/admin/export", params={"kind": "ratings"})
    assert exported.status_code == 200 and '"reason": "it is Oskartown"' in exported.text
    assert f'"demonstration": {demo["id"]}' in exported.text


# --- versions, rounds, evaluation, data -----------------------------------------------------------------------------


def test_promote_roll_back_and_compare(server, tiny_model_dir):
    db, data = server.state.db, server.state.settings.data_dir
    learned = [new_demo(db, "Quillmark.")]
    call(server, "POST", f"/api/admin/demonstrations/{learned[0]}/approve")
    register(db, data, tiny_model_dir, "va", "v0", learned, seed=3)
    probe = {"probe_id": 1, "answer": "Paris", "reply": "Paris", "correct": True}
    evals.record_eval(db, version="v0", skills={"geo": {"score": 1.0, "n": 1, "details": {"probes": [probe]}}})
    wrong = {**probe, "reply": "Lyon", "correct": False}
    evals.record_eval(db, version="va", skills={"geo": {"score": 0.0, "n": 1, "details": {"probes": [wrong]}}})

    listed = {v["name"]: v for v in call(server, "GET", "/api/admin/versions").json()}
    assert listed["va"]["parent"] == "v0" and listed["va"]["demonstrations"] == 1 and listed["va"]["scores"]["geo"] == 0
    detail = call(server, "GET", "/api/admin/versions/va").json()
    assert detail["lineage"] == ["va", "v0"] and [x["id"] for x in detail["learned"]] == learned

    promoted = call(server, "POST", "/api/admin/versions/va/activate")
    assert promoted.json() == {"active": "va", "previous": "v0"} and server.state.engine.active == "va"
    compared = call(server, "GET", "/api/admin/versions/va/compare", "rita").json()  # a reviewer compares too
    assert compared["parent"] == "v0" and compared["probes"][0]["old"] == "Paris" and not compared["probes"][0][
        "new_correct"]  # fmt: skip
    assert [x["id"] for x in compared["demonstrations"]] == learned and compared["demonstrations"][0]["new"]
    rolled = call(server, "POST", "/api/admin/versions/rollback")
    assert rolled.json() == {"active": "v0", "previous": "va"}
    assert server.state.engine.active == "v0" and versions.active_version(db).name == "v0"

    (data / "versions" / "va" / "adapter_model.safetensors").write_bytes(b"broken")
    refused = call(server, "POST", "/api/admin/versions/va/activate")
    assert refused.status_code == 409 and "checksum" in refused.json()["error"]["message"]
    assert versions.active_version(db).name == "v0" and server.state.engine.active == "v0"
    assert call(server, "POST", "/api/admin/versions/nope/activate").status_code == 404


def wait_job(server, job: dict, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while job["status"] == "running":
        assert time.monotonic() < deadline, f"job still running: {job}"
        time.sleep(0.5)
        job = call(server, "GET", f"/api/admin/jobs/{job['id']}").json()
    return job


def test_import_evaluate_export(server):
    lines = [
        {"skill": "arith", "messages": [{"role": "user", "content": f"{i}+{i}="}], "answer": str(2 * i),
         "grader": "contains"} for i in range(3)
    ] + [{"skill": "arith", "grader": "regex", "answer": "(", "messages": [{"role": "user", "content": "?"}]}
         ]  # fmt: skip
    probes = "".join(json.dumps(x) + "\n" for x in lines)
    imported = call(server, "POST", "/api/admin/import", content=probes, headers={"Content-Type": "text/plain"},
                    params={"kind": "probes"})  # fmt: skip
    assert imported.status_code == 200, imported.text
    report = imported.json()
    assert report["added"] == 3 and [n for n, _ in report["bad"]] == [4] and report["landed"]

    # every skill, the general suite included (the gate of the train-now test below reuses these v0 scores)
    job = call(server, "POST", "/api/admin/evaluations", json={"version": "v0"})
    assert job.status_code == 202 and job.json()["kind"] == "eval"
    assert call(server, "POST", "/api/admin/evaluations", json={"version": "v0"}).status_code == 409  # one at a time
    done = wait_job(server, job.json())
    assert done["status"] == "done", done
    assert done["result"]["skills"]["arith"]["n"] == 3 and done["result"]["skills"]["general"]["n"] > 100
    scores = call(server, "GET", "/api/admin/scores").json()
    assert {"arith", "general"} <= set(scores["skills"]) and scores["n"]["v0"]["arith"] == 3

    call(server, "POST", f"/api/admin/demonstrations/{new_demo(server.state.db, 'Exported.')}/approve")
    exported = call(server, "GET", "/api/admin/export", params={"kind": "demos", "format": "trl"})
    lines = [json.loads(x) for x in exported.text.splitlines()]
    assert exported.headers["X-Records"] == str(len(lines)) and lines
    assert all(set(x) == {"prompt", "privileged_context"} for x in lines)
    csv = call(server, "GET", "/api/admin/export", params={"kind": "evals"})
    assert csv.text.startswith("version,skill,score,n") and csv.headers["content-type"].startswith("text/csv")
    assert call(server, "GET", "/api/admin/export", params={"kind": "nope"}).status_code == 400


def test_schedule_names_the_round_in_progress_and_counts_only_what_waits_for_the_next(server):
    db = server.state.db
    ids = [new_demo(db, f"Queued {i}.") for i in range(3)]
    for i in ids:
        call(server, "POST", f"/api/admin/demonstrations/{i}/approve")
    before = call(server, "GET", "/api/admin/schedule").json()
    rnd = rounds.create_round(db, method="sdft", parent_version="v0", hyperparameters={}, owner="x", demo_ids=ids[:2])
    during = call(server, "GET", "/api/admin/schedule").json()
    call(server, "PATCH", f"/api/admin/demonstrations/{ids[0]}", json={"corrected_answer": "Edited mid-round."})
    edited = call(server, "GET", "/api/admin/schedule").json()  # the round learns the old text: the new one waits
    rounds.fail_round(db, round_id=rnd.id, error="test")
    after = call(server, "GET", "/api/admin/schedule").json()
    waiting = before["waiting_demonstrations"]
    assert during["round_running"] == rnd.id and during["waiting_demonstrations"] == waiting - 2
    assert edited["waiting_demonstrations"] == waiting - 1
    assert after["round_running"] is None and after["waiting_demonstrations"] == waiting


def test_train_now_runs_a_round_then_the_gate(server):
    db = server.state.db
    for i in range(2):
        call(server, "POST", f"/api/admin/demonstrations/{new_demo(db, f'Zorbia {i}.')}/approve")
    schedule = call(server, "GET", "/api/admin/schedule").json()
    assert schedule["waiting_demonstrations"] >= 2 and schedule["method"] == "sdft"
    started = call(server, "POST", "/api/admin/rounds")
    assert started.status_code == 202, started.text
    assert call(server, "POST", "/api/admin/rounds").status_code == 409  # one at a time
    done = wait_job(server, started.json())
    assert done["status"] == "done", done
    result = done["result"]
    assert result["status"] == "succeeded" and result["gate"].startswith(("promoted", "rejected"))
    listed = call(server, "GET", "/api/admin/rounds").json()
    assert listed[0]["id"] == result["round"] and listed[0]["status"] == "succeeded"
    one = call(server, "GET", f"/api/admin/rounds/{result['round']}").json()
    assert len(one["steps"]) == 2 and one["hyperparameters"]["steps"] == 2
    version = versions.get_version(db, name=result["version"])
    assert version.status == ("active" if result["promoted"] else "rejected") and version.reason == result["gate"]


# --- the queue at 100k rows ----------------------------------------------------------------------------------------


def test_queue_pages_stay_fast_at_100k_rows(engine):
    started = dt.datetime(2026, 1, 1)
    rows = [
        {"messages": [{"role": "user", "content": f"question {i}"}], "corrected_answer": f"answer {i}",
         "original_answer": "", "skill": ("geo", "math")[i % 2], "status": ("pending", "approved", "rejected")[i % 3],
         "created": started + dt.timedelta(seconds=i), "note": ""}
        for i in range(100_000)
    ]  # fmt: skip
    t0 = time.perf_counter()
    with engine.begin() as conn:  # Core's executemany: one portable statement, batched by each driver
        conn.execute(insert(Demonstration), rows)
    print(f"\ninserted 100,000 demonstrations in {time.perf_counter() - t0:.1f} s")
    cases = {
        "pending, page 1": (QueueFilter(), {}),
        "pending, deepest page": (QueueFilter(), {"before_id": 40}),
        "all, newer from the end": (QueueFilter(status=None), {"after_id": 30}),
        "pending + skill": (QueueFilter(skill="geo"), {}),
        "date range": (QueueFilter(status=None, since=started + dt.timedelta(hours=20)), {}),
        "text search": (QueueFilter(status=None, text="question 99999"), {}),
    }
    for label, (flt, cursor) in cases.items():
        t0 = time.perf_counter()
        page = queue_page(engine, flt, limit=25, **cursor)
        ms = 1000 * (time.perf_counter() - t0)
        print(f"  {label:<26} {ms:7.1f} ms  (rows {page.first_index + 1}.. of {page.total:,})")
        assert ms < 5000, f"{label} took {ms:.0f} ms"  # generous: real numbers are printed above
        assert page.rows, label
    deep = queue_page(engine, QueueFilter(), before_id=40, limit=25)
    assert deep.total == 33_334 and deep.first_index + len(deep.rows) == deep.total and deep.older is None
    assert [r.demo.id for r in deep.rows][:2] == [37, 34] and deep.newer == 37
    assert queue_page(engine, QueueFilter(status=None, text="question 99999")).total == 1


# --- the admin tabs' handlers check the role themselves ------------------------------------------------------------


def test_admin_tab_handlers_refuse_the_wrong_roles(engine, tmp_path):
    import asyncio

    import gradio as gr

    from app.state import AppState
    from app.ui import dashboard, data_tab, review, rounds
    from app.ui import versions as versions_tab
    from app.ui.review_handlers import ReviewHandlers

    for name, role in (("bob", "user"), ("rita", "reviewer"), ("ann", "admin")):
        users.create_user(engine, name=name, role=role, password="password-123")
    state = AppState(settings=Settings(data_dir=tmp_path), db=engine, engine=None)  # type: ignore[arg-type]
    with gr.Blocks() as demo:
        h = ReviewHandlers(state)
        h.c = review.layout()
        v, r, d = versions_tab.VersionHandlers(state), rounds.RoundHandlers(state), dashboard.DashboardHandlers(state)
        for handlers in (v, r, d):
            handlers.c = {"message": gr.HTML(), "timer": gr.Timer(), "seen": gr.State(), "summary": gr.HTML()}
        data = data_tab.DataHandlers(state)
    del demo
    demo_id = new_demo(engine, author=None)
    as_ = {n: gr.Request(username=n) for n in ("bob", "rita", "ann")}

    refused = h.approve({}, demo_id, as_["bob"])[h.c.message]
    assert "needs the admin or reviewer role" in refused and "Sorry" in refused
    assert h.reject({}, demo_id, "no", as_["bob"])[h.c.message].count("needs the") == 1
    assert "needs the" in h.bulk_handler("approve")({}, [demo_id], "", as_["bob"])[h.c.message]
    assert "needs the" in asyncio.run(h.teacher_check({}, demo_id, as_["bob"]))[h.c.message]
    assert admin_status(engine, demo_id) == "pending"
    for who in ("rita", "bob"):  # reviewers review; admin tabs refuse them as they refuse users
        assert "needs the admin role" in asyncio.run(v.activate("v0", as_[who]))[v.c["message"]]
        assert "needs the admin role" in asyncio.run(r.train_now(as_[who]))[r.c["message"]]
        assert "needs the admin role" in asyncio.run(d.evaluate("v0", "base", as_[who]))[d.c["message"]]
        assert "needs the admin role" in data.do_import(None, "auto", False, False, "", as_[who])
        assert "needs the admin role" in data.do_export("demos", "ours", "*", as_[who])[1]
    out = h.bulk_handler("approve")({}, [demo_id], "", as_["rita"])
    assert "1 demonstration(s) approved" in out[h.c.message] and admin_status(engine, demo_id) == "approved"
    exported = data.do_export("demos", "trl", "*", as_["ann"])
    assert "exported 1 demonstrations (trl)" in exported[1]
    upload = tmp_path / "demos.jsonl"
    good = {"messages": [{"role": "user", "content": "Capital of Brask?"}], "answer": "Tolm <b>.", "skill": "geo"}
    upload.write_text(json.dumps(good) + "\n{not json\n", encoding="utf-8")
    report = data.do_import(str(upload), "auto", True, False, "", as_["ann"])
    assert "imported 1 demonstrations, 1 bad line(s) skipped" in report and "line 2: not valid JSON" in report
    assert admin_status(engine, demo_id + 1) == "approved"


def admin_status(engine, demo_id: int) -> str:
    from storage.demonstrations import get_demonstrations

    return get_demonstrations(engine, ids=[demo_id])[0].status
