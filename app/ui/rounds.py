"""The Rounds tab (admins): training rounds with status, live progress, loss and KL curves, demonstration counts and
errors; the "Train now" button; the learning schedule's settings.

A timer re-reads the rounds every few seconds while the tab is open, so a running round's progress and curves move
by themselves (rounds write every optimizer step to the database). "Train now" first shows what the round would take
(app/services/learning.preview_round: the approved demonstrations, any replayed or left out, the default budget) with
a method and a budget (optimizer steps) to choose; "Start the round" then starts it in the background on exactly the
demonstrations shown (app/services/jobs.train_now: the round, then the gate, then the hot swap of a promoted
candidate).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from typing import Any

import gradio as gr

from app.services import queries
from app.services.jobs import train_now
from app.services.learning import RoundPreview, preview_round, round_config
from app.state import AppState
from app.ui import auth
from app.ui.admin_view import esc, message, short
from storage import leases
from storage.errors import ApprenticeError

ADMIN = ("admin",)
HEADERS = ["round", "status", "method", "from → to", "progress", "steps", "demos", "loss", "KL", "started", "s",
           "error"]  # fmt: skip
REFRESH_S = 3.0
METHODS = ("sdft", "sft")


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if isinstance(value, int | float) else ""


def round_table(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            r["id"],
            r["status"],
            r["method"],
            f"{r['parent'] or '?'} → {r['version'] or '…'}",
            f"{100 * r['progress']:.0f}%",
            r["steps_done"],
            f"{r['demonstrations']}" + (f" +{r['replayed']}" if r["replayed"] else ""),
            _num(r["loss"]),
            _num(r["kl"]),
            (r["started"] or "")[:16],
            _num(r["seconds"], 4),
            short(r["error"], 80),
        ]
        for r in rows
    ]


def curves(r: dict[str, Any] | None) -> Any:
    """Loss and KL per optimizer step of one round (plotly), or None when it has no steps yet."""
    import plotly.graph_objects as go

    steps = (r or {}).get("steps") or []
    if not steps:
        return None
    fig = go.Figure()
    x = [s.get("step", i + 1) for i, s in enumerate(steps)]
    loss, kl = [s.get("loss") for s in steps], [s.get("kl") for s in steps]
    pairs = zip(loss, kl, strict=True)
    same = all(a == b or (None not in (a, b) and math.isclose(a, b, rel_tol=1e-6)) for a, b in pairs)
    if same:  # SDFT's loss is the KL itself (forward KL, no SFT term): one line, named for both
        traces = [(loss, "loss = KL(teacher‖student)", "solid")]
    else:
        traces = [(loss, "loss", "solid"), (kl, "KL(teacher‖student)", "dash")]
    for ys, name, dash in traces:
        if any(y is not None for y in ys):
            fig.add_trace(go.Scatter(x=x, y=ys, mode="lines+markers", name=name, line={"dash": dash}))
    fig.update_layout(
        title=f"Round {r['id']} ({r['method']}): per-step loss", xaxis_title="optimizer step",
        height=320, margin={"l": 50, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h"},
    )  # fmt: skip
    return fig


def running_text(r: dict[str, Any] | None, lease_held: bool) -> str:
    """The round in progress in words: number, start, progress."""
    if r is None:
        return "a round is starting" if lease_held else "none"
    if not r["started"]:
        return f"round {r['id']} (queued)"
    started = dt.datetime.fromisoformat(r["started"])
    minutes = (dt.datetime.now(dt.UTC).replace(tzinfo=None) - started).total_seconds() / 60
    return (f"round {r['id']} (from {r['parent'] or '?'}), started {r['started'][11:16]} UTC "
            f"({minutes:.0f} min ago), {100 * r['progress']:.0f}% done, {r['steps_done']} step(s)")  # fmt: skip


def schedule_html(state: AppState) -> str:
    s = state.settings
    status = queries.learner_status(state.db)
    off = not s.learn_cron and s.learn_interval_minutes <= 0
    when = f"cron {s.learn_cron}" if s.learn_cron else f"every {s.learn_interval_minutes:g} minutes"
    where = "inside this server" if s.learn_in_server else "in a separate apprentice learn --daemon process"
    schedule = f"{when}, {where}"
    starts = f"at least {s.learn_min_demos} newly approved demonstration(s) wait (now: {status['waiting']})"
    if off:
        schedule = ("off: no round starts by itself (set APPRENTICE_LEARN_INTERVAL_MINUTES or "
                    "APPRENTICE_LEARN_CRON to schedule rounds)")  # fmt: skip
        starts = f"only on Train now ({status['waiting']} approved demonstration(s) wait)"
    if status["round"] is not None:
        starts += f"; {status['in_round']} more are being learned in round {status['round']['id']}"
    items = [
        ("Schedule", schedule),
        ("Starts when", starts),
        ("Method", f"{s.learn_method} (preset {s.learn_preset or 'default for the model'})"),
        ("New versions", "made live at once" if s.learn_activate else "go through the evaluation gate"),
        ("Round running now", running_text(status["round"], leases.holder(state.db, name="learner") is not None)),
    ]
    cell = "<tr><td style='padding:2px 10px 2px 0'><b>{}</b></td><td>{}</td></tr>"
    rows = "".join(cell.format(esc(k), esc(v)) for k, v in items)
    config = json.dumps(s.learn_config) if s.learn_config else "(preset values)"
    return f'<table id="rounds-schedule">{rows}<tr><td><b>Overrides</b></td><td>{esc(config)}</td></tr></table>'


def preview_html(p: RoundPreview) -> str:
    """What "Start the round" will learn, before it starts: each demonstration's id and first words."""

    def items(demos: list[Any]) -> str:
        rows = (f"<li>#{d.id} · {esc(short(d.messages[-1].get('content') if d.messages else '', 70))} → "
                f"<b>{esc(short(d.corrected_answer, 70))}</b></li>" for d in demos)  # fmt: skip
        return "<ul>" + "".join(rows) + "</ul>"

    if not p.new:
        why = "no approved demonstration waits that the live version has not learned"
        body = f"<p><b>Nothing to learn:</b> {esc(why)} ({esc(p.parent)} is live).</p>"
    else:
        body = (f"<p>The round continues <b>{esc(p.parent)}</b> and learns these {len(p.new)} approved "
                f"demonstration(s):</p>{items(p.new)}")  # fmt: skip
        if p.replay:
            body += f"<p>It also rehearses {len(p.replay)} already learned (replay):</p>{items(p.replay)}"
        body += f"<p>Default budget: {esc(p.budget)}.</p>"
    if p.skipped:
        left = "".join(f"<li>#{esc(x['demonstration'])}: {esc(x['reason'])}</li>" for x in p.skipped)
        body += f"<p>Left out:</p><ul>{left}</ul>"
    return f'<div id="rounds-preview">{body}</div>'


def jobs_html(state: AppState) -> str:
    jobs = [j for j in state.jobs.list() if j["kind"] == "train"][:3]
    if not jobs:
        return ""
    lines = "".join(f"<li>{esc(j['started'])} · <b>{esc(j['status'])}</b> · {esc(j['message'])}</li>" for j in jobs)
    return f'<div id="rounds-jobs"><b>Train now</b><ul>{lines}</ul></div>'


class RoundHandlers:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.c: dict[str, Any] = {}

    def listing(self, chosen: int | None, note: str | None = None) -> dict:
        c = self.c
        rows = queries.round_rows(self.state.db)
        ids = [r["id"] for r in rows]
        chosen = chosen if chosen in ids else (ids[0] if ids else None)
        detail = queries.read_round(self.state.db, chosen) if chosen is not None else None
        out = {
            c["table"]: round_table(rows),
            c["choice"]: gr.update(choices=[(f"round {i}", i) for i in ids], value=chosen),
            c["plot"]: curves(detail),
            c["detail"]: self.detail_html(detail),
            c["schedule"]: schedule_html(self.state),
            c["jobs"]: jobs_html(self.state),
        }
        if note is not None:
            out[c["message"]] = note
        return out

    @staticmethod
    def detail_html(r: dict[str, Any] | None) -> str:
        if r is None:
            return "<p>No training rounds yet. Approve demonstrations, then Train now (or wait for the schedule).</p>"
        error = ""
        if r["error"]:
            error = f"<div style='color:#b91c1c;white-space:pre-wrap'><b>Error:</b> {esc(r['error'])}</div>"
        metrics = {k: v for k, v in r["metrics"].items() if k != "skipped"}
        return (
            f'<div id="round-detail"><b>Round {esc(r["id"])}</b> · {esc(r["status"])} · '
            f"{esc(r['demonstrations'])} demonstration(s), {esc(r['replayed'])} replayed · "
            f"{esc(len(r['steps']))} step(s){error}"
            f"<details><summary>metrics and hyperparameters</summary><pre style='white-space:pre-wrap'>"
            f"{esc(json.dumps({'metrics': metrics, 'hyperparameters': r['hyperparameters']}, indent=1))}</pre>"
            "</details></div>"
        )

    def on_load(self, request: gr.Request) -> dict:
        try:
            auth.require_role(self.state, request, ADMIN)
        except ApprenticeError:
            return {self.c["timer"]: gr.Timer(active=False)}
        return self.listing(None)

    def refresh(self, chosen: int | None, request: gr.Request) -> dict:
        try:
            auth.require_role(self.state, request, ADMIN)
            return self.listing(chosen)
        except ApprenticeError as e:
            return {self.c["message"]: message(str(e), error=True)}

    def tick(self, chosen: int | None, seen: str, request: gr.Request) -> dict:
        """The timer: show the rounds again only when something changed (no redraw of an unchanged plot)."""
        try:
            auth.require_role(self.state, request, ADMIN)
        except ApprenticeError:
            return {self.c["timer"]: gr.Timer(active=False)}
        rows = queries.round_rows(self.state.db)
        signature = json.dumps([rows, chosen, self.state.jobs.list()[:3]], default=str)
        if signature == seen:
            return {self.c["seen"]: seen}  # nothing changed
        busy = self.state.jobs.running("train") is not None
        # Train now's "started" note goes when its job has ended (the job list below says how it ended)
        return {**self.listing(chosen, None if busy else ""), self.c["seen"]: signature}

    def pick_row(self, event: gr.SelectData, request: gr.Request) -> dict:
        row = event.row_value or []
        return self.refresh(int(row[0]) if row else None, request)

    async def train_now(self, request: gr.Request) -> dict:
        """Open the round's choices: method, budget, and the demonstrations it would learn now."""
        c = self.c
        try:
            await asyncio.to_thread(auth.require_role, self.state, request, ADMIN)
            config = round_config(self.state.settings)
            preview = await asyncio.to_thread(preview_round, self.state.db, self.state.settings, config)
        except ApprenticeError as e:
            return {c["message"]: message(str(e), error=True)}
        default = preview.steps if preview.new else config.steps or None
        return {
            c["box"]: gr.update(visible=True),
            c["preview"]: preview_html(preview),
            c["method"]: gr.update(value=config.method, label=f"Method (default: {config.method})"),
            c["steps"]: gr.update(value=None, placeholder=f"default: {default}" if default else "default"),
            c["shown"]: preview.demo_ids,
            c["start"]: gr.update(interactive=bool(preview.new)),
            c["message"]: "",
        }

    async def start(self, method: str, steps: float | None, shown: list[int], request: gr.Request) -> dict:
        """Start the round on the demonstrations the preview showed, with the chosen method and budget."""
        c = self.c
        try:
            await asyncio.to_thread(auth.require_role, self.state, request, ADMIN)
            if not shown:
                raise ApprenticeError("nothing to learn: press Train now again once demonstrations are approved")
            if method not in METHODS:
                raise ApprenticeError(f"method must be one of {', '.join(METHODS)}")
            if steps is not None and (steps != int(steps) or steps < 1):
                raise ApprenticeError(f"the budget is a whole number of optimizer steps, at least 1 (not {steps:g})")
            budget = None if steps is None else int(steps)
            await train_now(self.state, method=method, steps=budget, demo_ids=list(shown))
        except ApprenticeError as e:
            return {c["message"]: message(str(e), error=True)}
        steps_words = f"{budget} steps" if budget else "the default budget"
        what = f"{method}, {steps_words}, demonstration(s) {', '.join(f'#{i}' for i in shown)}"
        note = message(f"Train now started ({what}): a round, then the evaluation gate; progress below")
        return {**await asyncio.to_thread(self.listing, None, note), c["box"]: gr.update(visible=False)}

    def cancel(self) -> dict:
        return {self.c["box"]: gr.update(visible=False), self.c["shown"]: []}


def build(state: AppState, demo: gr.Blocks) -> None:
    """Lay out the rounds tab and wire its events (called inside `with gr.Tab(...)`)."""
    wired(state, demo)


def wired(state: AppState, demo: gr.Blocks) -> RoundHandlers:
    """`build`, returning the tab's handlers (their components in `.c`)."""
    h = RoundHandlers(state)
    with gr.Row(equal_height=True):
        train = gr.Button("Train now", variant="primary", elem_id="rounds-train", scale=1)
        choice = gr.Dropdown([], label="Round", elem_id="rounds-choice", scale=1)
        refresh = gr.Button("Refresh", size="sm", elem_id="rounds-refresh", scale=1)
    note = gr.HTML(elem_id="rounds-message")
    with gr.Group(visible=False, elem_id="rounds-train-box") as box:
        preview = gr.HTML(elem_id="rounds-preview-box")
        with gr.Row(equal_height=True):
            method = gr.Dropdown(list(METHODS), value=state.settings.learn_method, label="Method",
                                 elem_id="rounds-method", scale=1)  # fmt: skip
            steps = gr.Number(None, label="Budget: optimizer steps (empty: the default)", precision=0, minimum=1,
                              elem_id="rounds-steps", scale=1)  # fmt: skip
            start = gr.Button("Start the round", variant="primary", elem_id="rounds-start", scale=1)
            cancel = gr.Button("Cancel", size="sm", elem_id="rounds-cancel", scale=1)
    shown = gr.State([])
    jobs = gr.HTML(elem_id="rounds-jobs-box")
    table = gr.Dataframe(
        headers=HEADERS, interactive=False, wrap=True, elem_id="rounds-table", max_height=320,
        label="Training rounds, newest first (click a row for its curves)",
    )  # fmt: skip
    plot = gr.Plot(label="Loss and KL per step", elem_id="rounds-plot")
    detail = gr.HTML(elem_id="rounds-detail")
    with gr.Accordion("Learning schedule", open=True):
        schedule = gr.HTML(elem_id="rounds-schedule-box")
    timer, seen = gr.Timer(REFRESH_S), gr.State("")
    h.c = {"seen": seen, "table": table, "choice": choice, "plot": plot, "detail": detail, "schedule": schedule,
           "jobs": jobs, "message": note, "timer": timer, "box": box, "preview": preview, "method": method,
           "steps": steps, "shown": shown, "start": start}  # fmt: skip
    listing = [table, choice, plot, detail, schedule, jobs]
    quiet = {"show_progress": "hidden"}
    demo.load(h.on_load, None, [*listing, timer], **quiet)
    refresh.click(h.refresh, [choice], [*listing, note], **quiet)
    choice.input(h.refresh, [choice], [*listing, note], **quiet)
    table.select(h.pick_row, None, [*listing, note], **quiet)
    timer.tick(h.tick, [choice, seen], [*listing, seen, timer, note], **quiet)
    train.click(h.train_now, None, [box, preview, method, steps, shown, start, note], **quiet)
    start.click(h.start, [method, steps, shown], [*listing, note, box], **quiet)
    cancel.click(h.cancel, None, [box, shown], **quiet)
    return h
