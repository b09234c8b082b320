"""Import and export: our JSONL and TRL's SDFT format both ways, probes, eval results as CSV, bad lines reported
with their numbers (or nothing imported with strict), and the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from learner.exchange import export_text, import_text
from storage import evals
from storage.demonstrations import list_demonstrations
from storage.probes import list_probes

APPRENTICE = str(Path(sys.executable).with_name("apprentice"))
Q = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who wrote <b>Hamlet</b>?"}]


def jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


DEMOS = jsonl(
    {"messages": Q, "answer": "Shakespeare.", "skill": "literature"},
    {"messages": [{"role": "user", "content": "Capital of Zorbia?"}], "answer": "Quillmark", "skill": "facts"},
    {"prompt": [{"role": "user", "content": "Boiling point of water?"}], "privileged_context": "100 °C"},
)


def test_demos_import_approved_and_round_trip_in_both_formats(engine):
    report = import_text(engine, DEMOS, approve=True)
    assert (report.kind, report.added, report.bad) == ("demos", 3, [])
    demos = list_demonstrations(engine)
    assert [d.status for d in demos] == ["approved"] * 3
    assert demos[0].messages == Q and demos[0].skill == "literature" and demos[2].corrected_answer == "100 °C"
    ours, n = export_text(engine, kind="demos")
    assert n == 3 and json.loads(ours.splitlines()[0])["answer"] == "Shakespeare."
    trl, _ = export_text(engine, kind="demos", fmt="trl")
    first = json.loads(trl.splitlines()[0])
    assert first == {"prompt": Q, "privileged_context": "Shakespeare."}
    again = import_text(engine, ours)
    assert (again.added, again.unchanged) == (0, 3), "re-importing an export adds nothing"


def test_trl_export_imports_into_a_fresh_database(engine, tmp_path):
    from storage.db import make_engine, upgrade

    import_text(engine, DEMOS, approve=True)
    trl, _ = export_text(engine, kind="demos", fmt="trl")
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    upgrade(other)
    report = import_text(other, trl, skill="imported")
    assert report.added == 3 and {d.skill for d in list_demonstrations(other)} == {"imported"}
    assert [d.messages for d in list_demonstrations(other)] == [d.messages for d in list_demonstrations(engine)]


def test_bad_lines_are_listed_and_good_lines_land(engine):
    text = jsonl(
        {"messages": Q, "answer": "Shakespeare."},
        "{not json",
        {"messages": Q, "answer": ""},
        {"messages": [{"role": "assistant", "content": "hi"}], "answer": "x"},
        "",
        {"messages": Q, "answer": "Marlowe?", "skill": "literature"},
        {"question": "no known keys"},
    )
    report = import_text(engine, text)
    assert report.added == 2 and report.lines == 6
    assert [n for n, _ in report.bad] == [2, 3, 4, 7]
    assert "not valid JSON" in report.bad[0][1]
    assert "answer cannot be empty" in report.bad[1][1]
    assert "must be the user turn" in report.bad[2][1]
    assert 'expected {"messages", "answer"}' in report.bad[3][1]
    assert [d.status for d in list_demonstrations(engine)] == ["pending", "pending"]


def test_strict_imports_nothing_when_a_line_is_bad(engine):
    text = jsonl({"messages": Q, "answer": "Shakespeare."}, {"messages": Q})
    report = import_text(engine, text, strict=True)
    assert not report.landed and report.added == 0 and [n for n, _ in report.bad] == [2]
    assert list_demonstrations(engine) == []
    assert "nothing imported" in report.summary()


PROBES = jsonl(
    {"id": "p1", "skill": "geo", "messages": Q[1:], "answer": "Paris", "grader": "contains", "category": "capitals"},
    {"id": "p2", "skill": "geo", "messages": Q[1:], "answer": "(Paris", "grader": "regex"},
    {"id": "p3", "skill": "geo", "messages": Q[1:], "answer": "Nice", "grader": "choice", "choices": ["Paris", "Lyon"]},
    {"id": "p4", "skill": "geo", "messages": Q[1:], "answer": "Lyon", "grader": "choice", "choices": ["Paris", "Lyon"]},
    {"id": "p1", "skill": "geo", "messages": Q[1:], "answer": "Rome", "grader": "contains"},
)


def test_probe_import_refuses_bad_regex_and_choices_with_line_numbers(engine):
    report = import_text(engine, PROBES)
    assert report.kind == "probes" and report.added == 2
    assert [(n, m.split(":")[0]) for n, m in report.bad] == [
        (2, "invalid regex '(Paris'"),
        (3, "the answer 'Nice' is not among the choices ['Paris', 'Lyon']"),
        (5, "probe id 'p1' repeats line 1"),
    ]  # noqa: E501
    assert [p.external_id for p in list_probes(engine)] == ["p1", "p4"]
    assert import_text(engine, PROBES, strict=True).landed is False


def test_probes_round_trip_and_reimport_updates_by_id(engine):
    import_text(engine, PROBES)
    text, n = export_text(engine, kind="probes")
    assert n == 2 and json.loads(text.splitlines()[0])["category"] == "capitals"
    assert import_text(engine, text).unchanged == 2
    changed = text.replace('"Paris", "grader": "contains"', '"Paris!", "grader": "contains"')
    assert import_text(engine, changed).updated == 1
    assert list_probes(engine)[0].answer == "Paris!"


def test_eval_results_csv_round_trip(engine):
    evals.record_eval(
        engine, version="v0", skills={"general": {"score": 0.4123, "n": 305, "details": {"fingerprint": "ab"}}}
    )
    text, n = export_text(engine, kind="evals")
    header, row = text.splitlines()
    assert (
        n == 1 and header == "version,skill,score,n,created,fingerprint" and row.startswith("v0,general,0.412300,305,")
    )
    bad = text + "v9,general,0.5,10,,\nv0,general,1.5,10,,\n"
    report = import_text(engine, bad, kind="evals")
    assert report.added == 1 and [n for n, _ in report.bad] == [3, 4]
    assert "no model version named 'v9'" in report.bad[0][1]
    assert len(evals.list_results(engine)) == 2


def test_cli_import_and_export(tmp_path):
    env = {**os.environ, "APPRENTICE_HOME": str(tmp_path / "data")}
    demos = tmp_path / "demos.jsonl"
    demos.write_text(DEMOS + "{broken\n")
    out = subprocess.run([APPRENTICE, "import", str(demos), "--approve"], capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        == f"{demos} line 4: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    )  # noqa: E501
    assert out.stdout.strip() == "imported 3 demonstrations, 1 bad line(s) skipped"
    target = tmp_path / "train.jsonl"
    cmd = [APPRENTICE, "export", "--kind", "demos", "--format", "trl", "--out", str(target)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "exported 3 record(s)" in out.stderr
    assert json.loads(target.read_text().splitlines()[1])["privileged_context"] == "Quillmark"
    out = subprocess.run([APPRENTICE, "import", str(tmp_path / "nope.jsonl")], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and out.stderr.strip() == f"error: no such file: {tmp_path / 'nope.jsonl'}"
