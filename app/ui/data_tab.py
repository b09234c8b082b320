"""The Data tab (admins): `apprentice import` and `apprentice export` from the browser, through learner/exchange.py.

Import: a JSONL file of demonstrations (ours or TRL's) or probes, or a CSV of eval results; the kind is detected or
chosen; bad lines are listed with their numbers (the good ones land unless "all or nothing"). Export: demonstrations
(ours or TRL's SDFT format), probes, or eval results (CSV or JSONL), as a file to download.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from app.state import AppState
from app.ui import auth
from app.ui.admin_view import esc, message
from learner.exchange import FORMATS, KINDS, export_text, import_text
from storage.errors import ApprenticeError
from storage.models import DEMO_STATUSES

ADMIN = ("admin",)
KIND_LABELS = {"demos": "demonstrations", "probes": "probes", "evals": "eval results"}
SUFFIX = {"csv": ".csv"}


def import_report_html(report: Any) -> str:
    bad = "".join(f"<li>line {n}: {esc(m)}</li>" for n, m in report.bad[:200])
    more = f"<li>… and {len(report.bad) - 200} more</li>" if len(report.bad) > 200 else ""
    head = message(report.summary(), error=not report.landed)
    return f'<div id="data-import-report">{head}' + (f"<ul>{bad}{more}</ul>" if bad else "") + "</div>"


class DataHandlers:
    def __init__(self, state: AppState) -> None:
        self.state = state

    def do_import(
        self, file: str | None, kind: str, approve: bool, strict: bool, skill: str, request: gr.Request
    ) -> str:
        try:
            user = auth.require_role(self.state, request, ADMIN)
            if not file:
                raise ApprenticeError("choose a file to import first")
            try:
                text = Path(file).read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise ApprenticeError(f"the file is not UTF-8 text (byte {e.start})") from None
            report = import_text(
                self.state.db, text, kind=None if kind == "auto" else kind, approve=approve, strict=strict,
                skill=(skill or "").strip() or None, reviewer_id=user.id,
            )  # fmt: skip
            return import_report_html(report)
        except ApprenticeError as e:
            return message(str(e), error=True)

    def do_export(self, kind: str, fmt: str, status: str, request: gr.Request) -> tuple[Any, str]:
        try:
            auth.require_role(self.state, request, ADMIN)
            fmt = fmt if fmt in FORMATS[kind] else FORMATS[kind][0]
            text, count = export_text(
                self.state.db, kind=kind, fmt=fmt, status=None if status in ("*", None) or kind != "demos" else status
            )
            folder = Path(tempfile.mkdtemp(prefix="apprentice-export-"))
            path = folder / f"{kind}-{fmt}{SUFFIX.get(fmt, '.jsonl')}"
            path.write_text(text, encoding="utf-8")
            return gr.update(value=str(path), visible=True), message(f"exported {count} {KIND_LABELS[kind]} ({fmt})")
        except ApprenticeError as e:
            return gr.update(visible=False), message(str(e), error=True)


def build(state: AppState, demo: gr.Blocks) -> None:
    """Lay out the data tab and wire its events (called inside `with gr.Tab(...)`)."""
    h = DataHandlers(state)
    kinds = [(KIND_LABELS[k], k) for k in KINDS]
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("### Import")
            upload = gr.File(label="JSONL or CSV file", file_types=[".jsonl", ".json", ".csv", ".txt"],
                             elem_id="data-file", type="filepath")  # fmt: skip
            kind = gr.Dropdown([("detect from the file", "auto"), *kinds], value="auto", label="What it holds",
                               elem_id="data-kind")  # fmt: skip
            skill = gr.Textbox(label="Skill for records that name none (optional)", elem_id="data-skill")
            approve = gr.Checkbox(label="Demonstrations land approved (ready for training)", elem_id="data-approve")
            strict = gr.Checkbox(label="All or nothing (any bad line and nothing is imported)", elem_id="data-strict")
            do_import = gr.Button("Import", variant="primary", elem_id="data-import")
            imported = gr.HTML(elem_id="data-import-result")
        with gr.Column():
            gr.Markdown("### Export")
            export_kind = gr.Dropdown(kinds, value="demos", label="What", elem_id="data-export-kind")
            fmt = gr.Dropdown([("ours (JSONL)", "ours"), ("TRL SDFT (prompt, privileged_context)", "trl"),
                               ("CSV", "csv")], value="ours", label="Format", elem_id="data-export-format")  # fmt: skip
            status = gr.Dropdown([("every status", "*"), *[(s, s) for s in DEMO_STATUSES]], value="*",
                                 label="Demonstrations in this state", elem_id="data-export-status")  # fmt: skip
            do_export = gr.Button("Export", elem_id="data-export")
            download = gr.File(label="Exported file", visible=False, elem_id="data-download", interactive=False)
            exported = gr.HTML(elem_id="data-export-result")
    do_import.click(h.do_import, [upload, kind, approve, strict, skill], [imported])
    do_export.click(h.do_export, [export_kind, fmt, status], [download, exported])
