"""Import and export files: demonstrations, probes and eval results, shared by the CLI, the admin API and the UI.

Formats (one JSON object per line, UTF-8):
  demos, ours   {"messages": [...], "answer": "...", "skill": "...", "original_answer"?: "..."}
  demos, trl    {"prompt": [...] or "text", "privileged_context": "..."}   (TRL's SDFT dataset columns)
  probes        {"id"?, "skill", "category"?, "messages", "answer", "grader", "choices"?}   (see learner/probes.py)
  evals, csv    version,skill,score,n,created,fingerprint   (import reads version,skill,score,n)
  ratings       {"response_id", "version", "rating": 1 | -1, "reason", "user", "created", "messages", "reply",
                 "demonstration"}   (export only: a rating belongs to a stored reply)
Keys an import does not know are ignored, so an exported file imports back as is. Demonstrations in our format carry
the ratings of the reply they corrected ("ratings": [{"rating", "reason", "user", "created"}]).

An import checks every line first. Without `strict`, the good lines land (in one transaction) and the bad ones are
reported with their line numbers; with `strict`, one bad line and nothing lands.

    report = import_text(db, text, kind="demos", approve=True)
    text = export_text(db, kind="demos", fmt="trl")
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from learner.probes import check_name, parse_probe
from storage import evals, probes, ratings, review, versions
from storage.demonstrations import list_demonstrations, validate_messages
from storage.errors import ApprenticeError
from storage.models import DEMO_STATUSES

KINDS = ("demos", "probes", "evals")  # what an import takes
EXPORT_KINDS = (*KINDS, "ratings")
FORMATS = {"demos": ("ours", "trl"), "probes": ("ours",), "evals": ("csv", "ours"), "ratings": ("ours",)}
CSV_FIELDS = ("version", "skill", "score", "n", "created", "fingerprint")


@dataclass
class ImportReport:
    kind: str
    lines: int = 0  # records read (blank lines not counted)
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line number, message)
    landed: bool = True  # False when `strict` refused the file

    def summary(self) -> str:
        what = {"demos": "demonstrations", "probes": "probes", "evals": "eval results"}[self.kind]
        if not self.landed:
            return f"nothing imported: {len(self.bad)} bad line(s) of {self.lines} and --strict"
        parts = [f"imported {self.added} {what}"]
        if self.updated:
            parts.append(f"{self.updated} updated")
        if self.unchanged:
            parts.append(f"{self.unchanged} already present")
        if self.bad:
            parts.append(f"{len(self.bad)} bad line(s) skipped")
        return ", ".join(parts)


def detect_kind(text: str) -> str:
    """'probes' when the first record has a grader, 'ratings' when it has a rating and a reply (an export of ratings,
    which an import refuses), 'evals' for a CSV with a version column, else 'demos'."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    if first.lstrip().startswith("{"):
        try:
            record = json.loads(first)
        except json.JSONDecodeError:
            return "demos"
        if isinstance(record, dict) and "rating" in record and "reply" in record:
            return "ratings"
        return "probes" if isinstance(record, dict) and "grader" in record else "demos"
    return "evals" if "version" in first.split(",") else "demos"


def parse_demo(obj: Any, *, default_skill: str | None = None) -> dict[str, Any]:
    """One demonstration from our format or TRL's; raises ApprenticeError with the reason."""
    if not isinstance(obj, dict):
        raise ApprenticeError("a demonstration must be a JSON object")
    if "privileged_context" in obj:
        prompt = obj.get("prompt")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        answer, original = obj["privileged_context"], ""
    elif "answer" in obj:
        messages, answer, original = obj.get("messages"), obj["answer"], obj.get("original_answer") or ""
    else:
        raise ApprenticeError('expected {"messages", "answer"} or TRL\'s {"prompt", "privileged_context"}')
    if not isinstance(answer, str) or not answer.strip():
        raise ApprenticeError("the answer cannot be empty")
    if not isinstance(original, str):
        raise ApprenticeError("'original_answer' must be a string")
    skill = obj.get("skill", default_skill)
    return {
        "messages": validate_messages(messages),
        "answer": answer,
        "skill": check_name(skill, "skill") if skill else None,
        "original_answer": original,
    }


def _records(text: str, kind: str) -> list[tuple[int, Any]]:
    """(line number, parsed record or the ApprenticeError that parsing raised)."""
    if kind == "evals":
        return _csv_records(text)
    out: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            out.append((number, ApprenticeError(f"not valid JSON ({e.msg} at column {e.colno})")))
    return out


def _csv_records(text: str) -> list[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = {"version", "skill", "score", "n"} - set(reader.fieldnames or [])
    if missing:
        raise ApprenticeError(f"the CSV header lacks {', '.join(sorted(missing))}")
    return [(reader.line_num, row) for row in reader if any((v or "").strip() for v in row.values())]


def _parse_eval(row: dict[str, str], known_versions: set[str]) -> dict[str, Any]:
    version = (row["version"] or "").strip()
    if version not in known_versions:
        raise ApprenticeError(f"no model version named {version!r}")
    try:
        score, n = float(row["score"]), int(row["n"])
    except (TypeError, ValueError):
        raise ApprenticeError(f"score must be a number and n an integer (got {row['score']!r}, {row['n']!r})") from None
    if not 0.0 <= score <= 1.0 or n < 1:
        raise ApprenticeError("score must be within 0..1 and n at least 1")
    return {"version": version, "skill": check_name(row["skill"], "skill"), "score": score, "n": n}


def import_text(
    db: Engine,
    text: str,
    *,
    kind: str | None = None,
    approve: bool = False,
    strict: bool = False,
    skill: str | None = None,
    reviewer_id: int | None = None,
) -> ImportReport:
    """Check every record of `text`, then store the good ones (or none, with `strict`, if any is bad)."""
    kind = kind or detect_kind(text)
    if kind == "ratings":
        raise ApprenticeError("ratings are exported, not imported: each belongs to a reply stored here")
    if kind not in KINDS:
        raise ApprenticeError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if approve and kind != "demos":
        raise ApprenticeError("--approve applies to demonstrations only")
    known_versions = {v.name for v in versions.list_versions(db)} if kind == "evals" else set()
    parse = {
        "demos": lambda obj: parse_demo(obj, default_skill=skill),
        "probes": lambda obj: parse_probe(obj, default_skill=skill),
        "evals": lambda row: _parse_eval(row, known_versions),
    }[kind]
    report, good = ImportReport(kind=kind), []
    for number, record in _records(text, kind):
        report.lines += 1
        try:
            if isinstance(record, ApprenticeError):
                raise record
            good.append((number, parse(record)))
        except ApprenticeError as e:
            report.bad.append((number, str(e)))
    _check_duplicate_ids(good, report)
    if strict and report.bad:
        report.landed = False
        return report
    items = [item for number, item in good if number not in {n for n, _ in report.bad}]
    _store(db, kind, items, report, approve=approve, reviewer_id=reviewer_id)
    return report


def _check_duplicate_ids(good: list[tuple[int, Any]], report: ImportReport) -> None:
    seen: dict[str, int] = {}
    for number, item in good:
        external_id = getattr(item, "external_id", None)
        if external_id is None:
            continue
        if external_id in seen:
            report.bad.append((number, f"probe id {external_id!r} repeats line {seen[external_id]}"))
        seen.setdefault(external_id, number)
    report.bad.sort()


def _store(
    db: Engine, kind: str, items: list[Any], report: ImportReport, *, approve: bool, reviewer_id: int | None
) -> None:
    if not items:
        return
    if kind == "demos":
        report.added, report.unchanged = review.import_demonstrations(
            db, items=items, approve=approve, reviewer_id=reviewer_id
        )
    elif kind == "probes":
        counts = probes.add_probes(db, items=[_probe_item(p) for p in items])
        report.added, report.updated, report.unchanged = counts.added, counts.updated, counts.unchanged
    else:
        by_version: dict[str, dict[str, dict[str, Any]]] = {}
        for item in items:
            by_version.setdefault(item["version"], {})[item["skill"]] = {
                "score": item["score"],
                "n": item["n"],
                "details": {"source": "import"},
            }
        for version, skills in by_version.items():
            evals.record_eval(db, version=version, skills=skills)
            report.added += len(skills)


def _probe_item(spec: Any) -> dict[str, Any]:
    return {
        "skill": spec.skill,
        "messages": spec.messages,
        "answer": spec.answer,
        "grader": spec.grader,
        "choices": spec.choices,
        "category": spec.category,
        "external_id": spec.external_id,
    }


def export_text(db: Engine, *, kind: str, fmt: str | None = None, status: str | None = None) -> tuple[str, int]:
    """(file text, records written). Demonstrations: all statuses unless `status` (TRL format: approved only)."""
    if kind not in EXPORT_KINDS:
        raise ApprenticeError(f"unknown kind {kind!r}; use one of {', '.join(EXPORT_KINDS)}")
    fmt = fmt or FORMATS[kind][0]
    if fmt not in FORMATS[kind]:
        raise ApprenticeError(f"{kind} export formats: {', '.join(FORMATS[kind])} (not {fmt!r})")
    if kind == "demos":
        return _export_demos(db, fmt, status)
    if status is not None:
        raise ApprenticeError("--status applies to demonstrations only")
    if kind == "probes":
        rows = [_probe_json(p) for p in probes.list_probes(db)]
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), len(rows)
    if kind == "ratings":
        rows = ratings.export_ratings(db)
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), len(rows)
    return _export_evals(db, fmt)


def _export_demos(db: Engine, fmt: str, status: str | None) -> tuple[str, int]:
    if status is None and fmt == "trl":
        status = "approved"
    if status is not None and status not in DEMO_STATUSES:
        raise ApprenticeError(f"unknown status {status!r}; use one of {', '.join(DEMO_STATUSES)}")
    demos = list_demonstrations(db, status=status, limit=10**9)
    if fmt == "trl":
        rows = [{"prompt": d.messages, "privileged_context": d.corrected_answer} for d in demos]
    else:
        rated = ratings.ratings_by_message(db, message_ids=[d.source_message_id for d in demos if d.source_message_id])
        rows = [
            {
                "id": d.id,
                "messages": d.messages,
                "answer": d.corrected_answer,
                "skill": d.skill,
                "original_answer": d.original_answer,
                "status": d.status,
                "created": d.created.isoformat(),
                "ratings": rated.get(d.source_message_id or 0, []),
            }
            for d in demos
        ]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), len(rows)


def _probe_json(p: Any) -> dict[str, Any]:
    out = {"id": p.external_id, "skill": p.skill, "category": p.category, "messages": p.messages}
    out |= {"answer": p.answer, "grader": p.grader, "choices": p.choices, "source": p.source}
    return {k: v for k, v in out.items() if v not in (None, "")}


def _export_evals(db: Engine, fmt: str) -> tuple[str, int]:
    rows = evals.list_results(db)
    if fmt == "ours":
        lines = [
            json.dumps(
                {
                    "version": r.version,
                    "skill": r.skill,
                    "score": r.score,
                    "n": r.n,
                    "created": r.created.isoformat(),
                    "details": r.details,
                },
                ensure_ascii=False,
            )
            for r in rows
        ]
        return "".join(line + "\n" for line in lines), len(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rows:
        writer.writerow(
            [r.version, r.skill, f"{r.score:.6f}", r.n, r.created.isoformat(), (r.details or {}).get("fingerprint", "")]
        )
    return buffer.getvalue(), len(rows)
