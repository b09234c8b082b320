"""The Dashboard tab (admins): retention at a glance, from app/services/queries.dashboard_data.

- a version x skill heatmap, coloured by the change against the base model or against each skill's best accepted
  score (red: worse, green: better), each cell labelled with the score, each skill with its probe count;
- per-skill lines across versions, the general suite's line drawn thick, rejected candidates marked with a red ✗;
- "Evaluate" scores a version on every skill in the background (app/services/jobs.evaluate);
- live traffic beside the probes: per version, the replies it served and the share of them users rated up and down
  (a reply's latest rating counts; queries.ratings_per_version).

`heatmap(data, against)` and `lines(data)` are pure (tests/test_dashboard.py checks them on a three-version history).
"""

from __future__ import annotations

import asyncio
from typing import Any

import gradio as gr

from app.services import jobs, queries
from app.services.queries import Dashboard
from app.state import AppState
from app.ui import auth
from app.ui.admin_view import esc, message, table_html
from storage.errors import ApprenticeError

ADMIN = ("admin",)
AGAINST = [("change against the base model", "base"), ("change against each skill's best", "best"),
           ("score", "score")]  # fmt: skip
MARK = {"active": " ● live", "rejected": " ✗ rejected", "candidate": " (candidate)"}


def version_label(v: dict[str, Any]) -> str:
    """Plotly reads a little HTML in labels (<b>, <br>, entities): names are escaped so they show as written."""
    return f"{esc(v['name'])}{MARK.get(v['status'], '')}"


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}%"


def heatmap(data: Dashboard, against: str = "base") -> Any:
    """Versions (rows, oldest first) x skills (columns). Colour: change in points against the base or the skill's
    best accepted score, or the score itself; the text of a cell is its score and that change."""
    import plotly.graph_objects as go

    names = [v["name"] for v in data.versions]
    colour = {"base": data.vs_base, "best": data.vs_best, "score": data.score}[against]
    z = [[None if colour[v][s] is None else round(100 * colour[v][s], 1) for s in data.skills] for v in names]
    text = [
        [
            "not evaluated"
            if data.score[v][s] is None
            else _pct(data.score[v][s]) + ("" if against == "score" else f"<br>{_pct(colour[v][s], signed=True)}")
            for s in data.skills
        ]
        for v in names
    ]
    if against == "score":
        scale, zmid, title = "Viridis", None, "score (%)"
    else:
        limit = max([abs(x) for row in z for x in row if x is not None] + [1.0])
        scale, zmid, title = "RdYlGn", 0.0, "points vs " + ("base" if against == "base" else "best")
    fig = go.Figure(
        go.Heatmap(
            z=z, x=[_skill_label(data, s) for s in data.skills], y=[version_label(v) for v in data.versions],
            text=text, texttemplate="%{text}", colorscale=scale, zmid=zmid, hoverongaps=False,
            customdata=[[data.n[v][s] for s in data.skills] for v in names],
            hovertemplate="%{y} · %{x}<br>%{text}<br>scored on %{customdata} probes<extra></extra>",
            colorbar={"title": {"text": title}}, xgap=2, ygap=2,
            **({} if against == "score" else {"zmin": -limit, "zmax": limit}),
        )
    )  # fmt: skip
    what = {"base": f"change against {data.base}", "best": "change against each skill's best", "score": "score"}
    fig.update_layout(
        title=f"Retention: version × skill ({what[against]})",
        yaxis={"autorange": "reversed", "type": "category"},
        xaxis={"type": "category", "side": "top"},
        height=max(260, 90 + 48 * len(names)),
        margin={"l": 140, "r": 20, "t": 90, "b": 20},
    )
    return fig


def _skill_label(data: Dashboard, skill: str) -> str:
    """The skill's name, "(general)" for a general-suite skill not named so, and its probe count: "atlas (n=4)"
    (a range when versions were scored on different probe sets)."""
    notes = ["general"] if skill in data.general and "general" not in skill else []
    counts = sorted({data.n[v["name"]][skill] for v in data.versions} - {None})
    if counts:
        notes.append(f"n={counts[0]}" if len(counts) == 1 else f"n={counts[0]}–{counts[-1]}")
    return esc(f"{skill} ({', '.join(notes)})" if notes else skill)


def lines(data: Dashboard) -> Any:
    """One line per skill across versions (oldest to newest); the general suite thick; rejected versions ✗ red."""
    import plotly.graph_objects as go

    labels = [version_label(v) for v in data.versions]
    status = [v["status"] for v in data.versions]
    fig = go.Figure()
    for skill in data.skills:
        general = skill in data.general
        name = esc(f"{skill} (general suite)" if general and "general" not in skill else skill)
        ys = [None if data.score[v["name"]][skill] is None else 100 * data.score[v["name"]][skill]
              for v in data.versions]  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=labels, y=ys, name=name, mode="lines+markers",
                connectgaps=True, line={"width": 5 if general else 2, **({"color": "black"} if general else {})},
                marker={"symbol": ["x" if s == "rejected" else "circle" for s in status], "size": 11,
                        "line": {"width": 1}},
                hovertemplate="%{x}<br>" + esc(skill).replace("%", "&#37;") + ": %{y:.1f}%<extra></extra>",
            )
        )  # fmt: skip
    rejected = [i for i, s in enumerate(status) if s == "rejected"]
    if rejected:
        fig.add_trace(
            go.Scatter(
                x=[labels[i] for i in rejected], y=[0] * len(rejected), name="rejected candidate",
                mode="markers", marker={"symbol": "x", "size": 14, "color": "#b91c1c"},
                hovertemplate="%{x}: rejected by the gate<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        title="Score per skill across versions (thick: the general suite; ✗: rejected candidates)",
        xaxis={"type": "category", "title": "version (oldest → newest)"},
        yaxis={"title": "score (%)", "range": [-5, 105]},
        height=380,
        margin={"l": 60, "r": 20, "t": 60, "b": 60},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def summary_html(data: Dashboard) -> str:
    if not data.versions:
        return (
            "<p>No evaluations yet. Evaluate the live version below (or run <code>apprentice eval</code>); "
            "the gate evaluates every new candidate.</p>"
        )
    rejected = [v for v in data.versions if queries.gate_rejected(v["reason"])]
    by_hand = {"active": " (made live by hand; live now)", "retired": " (made live by hand; retired since)"}
    items = "".join(
        f"<li><b>{esc(v['name'])}</b>: {esc(v['reason'] + by_hand.get(v['status'], ''))}</li>" for v in rejected
    )
    general = ", ".join(data.general) or "none evaluated"
    return (
        f'<div id="dashboard-summary">{len(data.versions)} evaluated version(s), {len(data.skills)} skill(s); '
        f"general suite: {esc(general)}; base: {esc(data.base)}."
        + (f"<div>Rejected by the gate:<ul>{items}</ul></div>" if rejected else "")
        + "</div>"
    )


def ratings_html(rows: list[dict[str, Any]]) -> str:
    """Users' ratings per version: replies served, rated up and down (count and share of the replies), and the
    share of rated replies rated down."""
    if not rows:
        return (
            '<div id="dashboard-ratings"><p>No replies served yet: users\' thumbs up and down per version will '
            "show here.</p></div>"
        )
    body = [
        [r["version"] + MARK.get(r["status"], ""), f"{r['replies']:,}",
         f"{r['up']:,} ({_pct(r['up_share'])})", f"{r['down']:,} ({_pct(r['down_share'])})",
         f"{r['rated']:,}" + (f" ({_pct(r['down_of_rated'])} of them down)" if r["rated"] else "")]
        for r in reversed(rows)  # newest first
    ]  # fmt: skip
    headers = ["version", "replies", "rated up", "rated down", "rated"]
    title = "<b>Live traffic</b>: users' ratings of each version's replies (newest version first)"
    return f'<div id="dashboard-ratings"><div>{title}</div>{table_html(headers, body)}</div>'


class DashboardHandlers:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.c: dict[str, Any] = {}

    def show(self, against: str, note: str | None = None) -> dict:
        c = self.c
        data = queries.dashboard_data(self.state.db)
        names = [r["name"] for r in queries.version_rows(self.state.db)]
        live = next((r["name"] for r in queries.version_rows(self.state.db) if r["status"] == "active"), None)
        out = {
            c["heatmap"]: heatmap(data, against) if data.versions else None,
            c["lines"]: lines(data) if data.versions else None,
            c["summary"]: summary_html(data),
            c["ratings"]: ratings_html(queries.ratings_per_version(self.state.db)),
            c["version"]: gr.update(choices=list(reversed(names)), value=live),
        }
        if note is not None:
            out[c["message"]] = note
        return out

    def on_load(self, request: gr.Request) -> dict:
        try:
            auth.require_role(self.state, request, ADMIN)
        except ApprenticeError:
            return {self.c["summary"]: ""}  # the tab is hidden from this user
        return self.show("base")

    def refresh(self, against: str, request: gr.Request) -> dict:
        try:
            auth.require_role(self.state, request, ADMIN)
            return self.show(against or "base")
        except ApprenticeError as e:
            return {self.c["message"]: message(str(e), error=True)}

    async def evaluate(self, version: str | None, against: str, request: gr.Request) -> dict:
        try:
            await asyncio.to_thread(auth.require_role, self.state, request, ADMIN)
            if not version:
                raise ApprenticeError("choose a version to evaluate")
            job = await jobs.evaluate(self.state, version)
            note = f"evaluating {version} in the background (job {job['id']}); press Refresh when it is done"
            return await asyncio.to_thread(self.show, against or "base", message(note))
        except ApprenticeError as e:
            return {self.c["message"]: message(str(e), error=True)}


def build(state: AppState, demo: gr.Blocks) -> None:
    """Lay out the dashboard tab and wire its events (called inside `with gr.Tab(...)`)."""
    h = DashboardHandlers(state)
    with gr.Row(equal_height=True):
        against = gr.Radio(AGAINST, value="base", label="Colour the heatmap by", elem_id="dashboard-against", scale=3)
        refresh = gr.Button("Refresh", size="sm", elem_id="dashboard-refresh", scale=1)
    summary = gr.HTML(elem_id="dashboard-summary-box")
    heat = gr.Plot(label="Version × skill", elem_id="dashboard-heatmap")
    trend = gr.Plot(label="Skills across versions", elem_id="dashboard-lines")
    rated = gr.HTML(elem_id="dashboard-ratings-box")
    with gr.Row(equal_height=True):
        version = gr.Dropdown([], label="Version to evaluate", elem_id="dashboard-version", scale=2)
        evaluate = gr.Button("Evaluate on every skill", elem_id="dashboard-evaluate", scale=1)
    note = gr.HTML(elem_id="dashboard-message")
    h.c = {"heatmap": heat, "lines": trend, "summary": summary, "version": version, "message": note, "ratings": rated}
    shown = [heat, trend, summary, version, rated]
    quiet = {"show_progress": "hidden"}
    demo.load(h.on_load, None, shown, **quiet)
    refresh.click(h.refresh, [against], [*shown, note], **quiet)
    against.input(h.refresh, [against], [*shown, note], **quiet)
    evaluate.click(h.evaluate, [version, against], [*shown, note], **quiet)
