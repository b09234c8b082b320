"""The retention dashboard's data and plots on a history of three versions: the base, a promoted version and a
rejected candidate; plus the versions and rounds listings, the learning schedule, the compare sample and the HTML
escaping of the admin views."""

from __future__ import annotations

import pytest

from app.services import queries
from app.ui import dashboard
from app.ui.admin_view import check_html, demo_html, side_by_side, table_html
from storage import evals, rounds, versions
from storage.demonstrations import create_demonstration
from storage.review import approve, edit

Q = [{"role": "user", "content": "Capital of Zorbia?"}]
SCORES = {
    "v0": {"general": (0.40, 300), "geo": (0.10, 20), "math": (0.50, 30)},
    "v1": {"general": (0.41, 300), "geo": (0.60, 20), "math": (0.50, 30)},
    "v2": {"general": (0.30, 300), "geo": (0.80, 20)},  # forgot general knowledge; never scored on math
}


def train(engine, parent: str, demo_ids: list[int], *, steps: list[dict] | None = None) -> str:
    rnd = rounds.create_round(
        engine, method="sdft", parent_version=parent, hyperparameters={"lr": 2e-4}, owner="test", demo_ids=demo_ids
    )
    rounds.mark_running(engine, round_id=rnd.id)
    for i, step in enumerate(steps or [], 1):
        rounds.record_step(engine, round_id=rnd.id, step=step, progress=i / len(steps))
    name = f"v{rnd.id}"
    rounds.succeed_round(engine, round_id=rnd.id, version=name, adapter_path=f"/nowhere/{name}", checksum="x",
                         metrics={"steps": len(steps or [])})  # fmt: skip
    return name


@pytest.fixture()
def history(engine):
    demos = [
        create_demonstration(engine, messages=Q, corrected_answer=f"Quillmark {i}", skill="geo").id for i in range(3)
    ]
    for i in demos:
        approve(engine, demo_id=i, reviewer_id=None)
    steps = [{"step": 1, "loss": 2.0, "kl": 1.5}, {"step": 2, "loss": 1.2, "kl": 0.9}]
    assert train(engine, "v0", demos[:2], steps=steps) == "v1"
    versions.set_active(engine, name="v1")
    assert train(engine, "v1", demos[2:]) == "v2"
    evals.record_gate(engine, candidate="v2", promote=False, reason="rejected: general dropped 11.0 points")
    for version, skills in SCORES.items():
        evals.record_eval(engine, version=version, skills={s: {"score": v, "n": n} for s, (v, n) in skills.items()})
    return engine


def test_dashboard_data_for_three_versions(history):
    data = queries.dashboard_data(history)
    assert [v["name"] for v in data.versions] == ["v0", "v1", "v2"]
    assert [v["status"] for v in data.versions] == ["retired", "active", "rejected"]
    assert data.skills == ["general", "geo", "math"] and data.general == ["general"] and data.base == "v0"
    assert data.score["v2"]["math"] is None and data.n["v0"]["general"] == 300
    assert data.vs_base["v1"]["geo"] == pytest.approx(0.5) and data.vs_base["v2"]["general"] == pytest.approx(-0.1)
    assert data.vs_base["v0"]["geo"] == 0.0 and data.vs_base["v2"]["math"] is None
    # best counts accepted versions only: the rejected v2's 0.80 on geo is not the bar for the live versions
    assert data.best == {"general": 0.41, "geo": 0.60, "math": 0.50}
    assert data.vs_best["v2"]["general"] == pytest.approx(-0.11) and data.vs_best["v2"]["geo"] == pytest.approx(0.2)
    assert data.vs_best["v0"]["geo"] == pytest.approx(-0.5)
    assert "general dropped" in data.versions[2]["reason"]


def test_plot_labels_show_names_as_written(engine):
    evals.record_eval(engine, version="v0", skills={"<b>x</b>": {"score": 0.5, "n": 4}})
    data = queries.dashboard_data(engine)
    assert list(dashboard.heatmap(data).data[0].x) == ["&lt;b&gt;x&lt;/b&gt; (n=4)"]
    assert dashboard.lines(data).data[0].name == "&lt;b&gt;x&lt;/b&gt;"


def test_an_unevaluated_version_has_no_row(engine):
    assert queries.dashboard_data(engine).versions == []
    evals.record_eval(engine, version="v0", skills={"geo": {"score": 0.5, "n": 4}})
    data = queries.dashboard_data(engine)
    assert [v["name"] for v in data.versions] == ["v0"] and data.best == {"geo": 0.5}


def test_heatmap_and_lines(history):
    data = queries.dashboard_data(history)
    heat = dashboard.heatmap(data, "base").data[0]
    assert list(heat.y) == ["v0", "v1 ● live", "v2 ✗ rejected"]
    assert list(heat.x) == ["general (n=300)", "geo (n=20)", "math (n=30)"] and heat.customdata[2][2] is None
    assert heat.z[1][1] == pytest.approx(50.0) and heat.z[2][2] is None and heat.zmid == 0
    assert heat.text[1][1] == "60.0%<br>+50.0" and heat.text[2][2] == "not evaluated"
    best = dashboard.heatmap(data, "best").data[0]
    assert best.z[2][0] == pytest.approx(-11.0) and best.z[0][1] == pytest.approx(-50.0)
    assert dashboard.heatmap(data, "score").data[0].z[0][0] == pytest.approx(40.0)

    fig = dashboard.lines(data)
    by_name = {t.name: t for t in fig.data}
    general = by_name["general"]
    assert general.line.width == 5 and by_name["geo"].line.width == 2
    assert list(general.y) == pytest.approx([40.0, 41.0, 30.0])
    assert list(general.marker.symbol) == ["circle", "circle", "x"]
    assert list(by_name["rejected candidate"].x) == ["v2 ✗ rejected"]
    assert "v2" in dashboard.summary_html(data) and "general dropped" in dashboard.summary_html(data)


def test_versions_and_rounds_listings(history):
    rows = {r["name"]: r for r in queries.version_rows(history)}
    assert rows["v1"]["parent"] == "v0" and rows["v1"]["round"] == 1 and rows["v1"]["method"] == "sdft"
    assert rows["v1"]["demonstrations"] == 2 and rows["v2"]["demonstrations"] == 1
    assert rows["v0"]["method"] == "base model" and rows["v2"]["scores"] == {"general": 0.3, "geo": 0.8}
    detail = queries.version_detail(history, "v2")
    assert detail["lineage"] == ["v2", "v1", "v0"] and [d["question"] for d in detail["learned"]] == [Q[0]["content"]]
    edit(history, demo_id=detail["learned"][0]["id"], corrected_answer="Quillmark, on the Vell")
    learned = queries.version_detail(history, "v2")["learned"][0]
    assert (learned["corrected_answer"], learned["edited_since"]) == ("Quillmark 2", True)  # the text v2 learned

    listed = queries.round_rows(history)
    assert [r["id"] for r in listed] == [2, 1] and listed[1]["loss"] == 1.2 and listed[1]["kl"] == 0.9
    assert listed[1]["demonstrations"] == 2 and listed[1]["status"] == "succeeded"
    one = queries.read_round(history, 1)
    assert [s["loss"] for s in one["steps"]] == [2.0, 1.2] and one["hyperparameters"] == {"lr": 2e-4}


def test_round_curves_plot_loss_and_kl(history):
    from app.ui.rounds import curves

    fig = curves(queries.read_round(history, 1))
    assert [t.name for t in fig.data] == ["loss", "KL(teacher‖student)"] and list(fig.data[0].y) == [2.0, 1.2]
    assert curves(queries.read_round(history, 2)) is None  # no steps recorded
    steps = [{"step": 1, "loss": 0.5, "kl": 0.5}, {"step": 2, "loss": 0.4, "kl": 0.4}]
    same = {"id": 3, "method": "sdft", "steps": steps}
    assert [t.name for t in curves(same).data] == ["loss = KL(teacher‖student)"]  # forward KL: one line, not two
    sft = {"id": 4, "method": "sft", "steps": [{"step": 1, "loss": 0.5, "kl": None}]}
    assert [t.name for t in curves(sft).data] == ["loss"]


def test_a_rejected_version_made_live_by_hand(history):
    """The gate rejected v2; an admin makes it live anyway, then rolls back: v2 is retired but was never accepted."""
    from app.ui.versions import detail_html, version_table

    versions.set_active(history, name="v2")
    versions.set_active(history, name="v1")
    data = queries.dashboard_data(history)
    assert data.versions[2]["status"] == "retired" and data.best["geo"] == 0.60  # v2's 0.80 is no skill's best
    rows = queries.version_rows(history)
    assert [r["by_hand"] for r in rows] == [False, False, True]
    note = version_table(rows)[0][-1]
    assert note.startswith("rejected: general dropped 11.0 points") and note.endswith("; made live by hand")
    assert "made live by hand anyway (last activated 20" in detail_html(queries.version_detail(history, "v2"))
    assert "(made live by hand; retired since)" in dashboard.summary_html(data)


def test_schedule_names_the_round_in_progress_and_what_waits(history, tmp_path):
    from app.settings import Settings
    from app.state import AppState
    from app.ui.rounds import schedule_html

    fresh = [create_demonstration(history, messages=Q, corrected_answer=f"Tolm {i}", skill="geo").id for i in range(2)]
    for i in fresh:
        approve(history, demo_id=i, reviewer_id=None)
    state = AppState(settings=Settings(data_dir=tmp_path), db=history, engine=None)  # type: ignore[arg-type]
    assert "(now: 2)" in schedule_html(state) and "<td>none</td>" in schedule_html(state)
    rnd = rounds.create_round(history, method="sdft", parent_version="v1", hyperparameters={}, owner="t",
                              demo_ids=fresh[:1])  # fmt: skip
    rounds.mark_running(history, round_id=rnd.id)
    rounds.record_step(history, round_id=rnd.id, step={"step": 1, "loss": 1.0}, progress=0.25)
    html = schedule_html(state)
    assert "(now: 1); 1 more are being learned in round 3" in html and "every 60 minutes" in html
    assert "round 3 (from v1), started " in html and "UTC (0 min ago), 25% done, 1 step(s)" in html
    state.settings = Settings(data_dir=tmp_path, learn_interval_minutes=0)
    html = schedule_html(state)
    assert "off: no round starts by itself (set APPRENTICE_LEARN_INTERVAL_MINUTES or APPRENTICE_LEARN_CRON" in html
    assert "only on Train now (1 approved demonstration(s) wait)" in html


def test_compare_samples_the_trained_skills_first_and_clips_long_answers():
    from app.services.answers import _sample

    items = [{"skill": s, "probe_id": i, "old_correct": i % 2 == 0, "new_correct": False}
             for i, s in enumerate(["general"] * 20 + ["geo"] * 3)]  # fmt: skip
    picked = _sample(items, 5, seed=1, prefer={"geo"})
    assert [p["skill"] for p in picked] == ["geo"] * 3 + ["general"] * 2
    # changed outcomes first within each group: geo 20 and 22 (right -> wrong), then 21; then general's changed ones
    assert {p["probe_id"] for p in picked[:2]} == {20, 22} and picked[2]["probe_id"] == 21
    assert picked[3]["old_correct"] and picked[4]["old_correct"]
    pair = {"kind": "demonstration", "id": 1, "skill": "geo", "question": "q", "reference": "r", "old": "x" * 5000,
            "new": "short", "old_agreement": 0.0, "new_agreement": 1.0}  # fmt: skip
    html = side_by_side([pair], old="v0", new="v1")
    assert "x" * 400 + "… (4,600 more characters)" in html and "x" * 401 not in html


XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def test_admin_views_show_markup_as_text():
    demo = {
        "id": 7, "status": "pending", "skill": XSS, "author": XSS, "reviewer": None, "created": "2026-01-01",
        "reviewed": None, "note": XSS, "messages": [{"role": "user", "content": XSS}], "question": XSS,
        "original_answer": XSS, "corrected_answer": XSS, "teacher_check": None,
    }  # fmt: skip
    check = {"version": XSS, "student_answer": XSS, "teacher_answer": XSS, "student_agreement": 0.0,
             "teacher_agreement": 0.1, "teacher_disagrees": True, "already_known": False, "created": XSS}  # fmt: skip
    pair = {"kind": "probe", "probe_id": 1, "skill": XSS, "question": XSS, "reference": XSS, "old": XSS, "new": XSS,
            "old_correct": True, "new_correct": False}  # fmt: skip
    for fragment in (demo_html(demo), check_html(check), side_by_side([pair], old=XSS, new=XSS),
                     table_html([XSS], [[XSS]])):  # fmt: skip
        assert "<script" not in fragment and "<img" not in fragment
        assert "&lt;script&gt;" in fragment and "&lt;img src=x onerror=&quot;window.pwned=2&quot;&gt;" in fragment
