"""The lifelong benchmark's report from its cached round records: JSON (accuracies 0..1; seed means with the
per-seed values beside them), a markdown table and PNG plots (facts kept and general score against rounds, one line
per method). `run_lifelong` runs the jobs (app.bench.lifelong), then writes the report.

    report = run_lifelong(LifelongOptions(model_dir=folder, out_dir=Path("bench-out/lifelong")), workers=2)
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from app.bench import lifelong
from app.bench.lifelong import LifelongOptions, base_job, job_records, prepare

ROUND_KEYS = ("general", "direct_mc", "indirect_mc", "same_gen", "para_gen", "phrase_rate", "train_s", "gate_s")
FINAL_KEYS = ("general", "general_drop", "direct_mc", "indirect_mc", "same_gen", "para_gen", "promoted",
              "retention_min", "round_seconds")  # fmt: skip
COLORS = {"sft": "#d95f02", "sdft": "#1b9e77"}


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _with_seeds(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {k: _mean([r[k] for r in rows if r.get(k) is not None]) for k in keys}
    out["per_seed"] = {k: [r.get(k) for r in rows] for k in keys}
    out["std"] = {k: statistics.pstdev(v) if len(v := [r[k] for r in rows if r.get(k) is not None]) > 1 else 0.0
                  for k in keys}  # fmt: skip
    return out


def final_of(records: list[dict[str, Any]], base_general: float) -> dict[str, Any]:
    """One seed's final row: the live version after its last round, over every fact taught in the run."""
    last = records[-1]
    retention = []
    for group, final in last["group_mc"].items():
        best = max(r["group_mc"][group] for r in records if group in r["group_mc"])
        retention.append(final / best if best > 0 else 1.0)
    return {
        **{k: last[k] for k in ("general", "direct_mc", "indirect_mc", "same_gen", "para_gen")},
        "general_drop": base_general - last["general"],
        "promoted": sum(r["promoted"] for r in records),
        "rounds": len(records),
        "retention_min": min(retention) if retention else None,
        "round_seconds": _mean([r["train_s"] + r["gate_s"] for r in records]),
    }


def run_lifelong(options: LifelongOptions, workers: int = 1, run_jobs: bool = True) -> dict[str, Any]:
    """Run (or resume) every job (`run_jobs=False`: none), then write the report (JSON, table, plots) into out_dir
    and return it."""
    started = time.perf_counter()
    if run_jobs:
        lifelong.run_jobs(options, workers)
    report = assemble(prepare(options), time.perf_counter() - started)
    write_all(report, Path(options.out_dir), options.json_path)
    return report


def assemble(run: Any, seconds: float) -> dict[str, Any]:
    options = run.options
    base = base_job(run)
    methods: dict[str, Any] = {}
    for method in options.methods:
        per_seed = {s: job_records(run, method, s) for s in options.seeds}
        complete = {s: r for s, r in per_seed.items() if len(r) == options.rounds}
        rounds = []
        for k in range(1, options.rounds + 1):
            rows = [r[k - 1] for r in per_seed.values() if len(r) >= k]
            if rows:
                row = _with_seeds(rows, ROUND_KEYS)
                row.update(round=k, promoted=sum(r["promoted"] for r in rows), seeds=len(rows),
                           reason=[r["reason"] for r in rows])  # fmt: skip
                rounds.append(row)
        finals = [final_of(r, base["general"]) for r in complete.values()]
        methods[method] = {
            "final": _with_seeds(finals, FINAL_KEYS) | {"rounds": options.rounds, "seeds": sorted(complete)},
            "rounds": rounds,
            "config": run.config(method, options.seeds[0]).to_dict(),
        }
    return {
        "model": options.model_name,
        "facts": str(options.facts_path),
        "split": options.split,
        "taught": [f.id for f in run.taught],
        "seeds": options.seeds,
        "rounds": options.rounds,
        "per_round": options.per_round,
        "general_n": options.general_n,
        "base": {k: base[k] for k in ("general", "direct_mc", "indirect_mc", "same_gen", "para_gen", "phrase_rate")},
        "methods": methods,
        "seconds": round(seconds, 1),
    }


def _pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" + (f" ± {100 * std:.1f}" if std else "")


def markdown(report: dict[str, Any]) -> str:
    base = report["base"]
    lines = [
        f"# bench lifelong: {report['model']}, {report['rounds']} rounds x {report['per_round']} facts "
        f"({report['split']} facts), seeds {report['seeds']}",
        "",
        f"Base: general {_pct(base['general'])}, MC {_pct(base['direct_mc'])} / {_pct(base['indirect_mc'])}, "
        f"same-question gen. {_pct(base['same_gen'])}, paraphrase gen. {_pct(base['para_gen'])}.",
        "",
        "Final live version, over every fact taught (%, mean ± std over seeds):",
        "",
        "| method | general | drop (points) | direct MC | indirect MC | same-q gen. | para. gen. | promoted "
        "| retention min | round + gate s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in report["methods"].items():
        f, sd = row["final"], row["final"]["std"]
        if f["general"] is None:
            lines.append(f"| {method} | (no seed finished) |||||||||")
            continue
        lines.append(
            f"| {method} | {_pct(f['general'], sd['general'])} | {100 * f['general_drop']:.1f} "
            f"| {_pct(f['direct_mc'], sd['direct_mc'])} | {_pct(f['indirect_mc'], sd['indirect_mc'])} "
            f"| {_pct(f['same_gen'], sd['same_gen'])} | {_pct(f['para_gen'], sd['para_gen'])} "
            f"| {f['promoted']:.1f} / {f['rounds']} | {_pct(f['retention_min'])} | {f['round_seconds']:.0f} |"
        )
    for method, row in report["methods"].items():
        lines += ["", f"## {method}, round by round (live version after the round)", "",
                  "| round | promoted | general | direct MC | indirect MC | same-q gen. | para. gen. | phrase rate "
                  "| train s | gate s |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in row["rounds"]:
            lines.append(
                f"| {r['round']} | {r['promoted']}/{r['seeds']} | {_pct(r['general'])} | {_pct(r['direct_mc'])} "
                f"| {_pct(r['indirect_mc'])} | {_pct(r['same_gen'])} | {_pct(r['para_gen'])} "
                f"| {_pct(r['phrase_rate'])} | {r['train_s']:.0f} | {r['gate_s']:.0f} |"
            )
        lines += ["", "Gate reasons (seed 0 first):"]
        lines += [f"- round {r['round']}: {r['reason'][0]}" for r in row["rounds"]]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("general", "general suite"), ("mc", "taught facts, MC (direct+indirect)/2"),
              ("same_gen", "same question, greedy")]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for method, row in report["methods"].items():
            xs = [r["round"] for r in row["rounds"]]
            if key == "mc":
                ys = [100 * (r["direct_mc"] + r["indirect_mc"]) / 2 for r in row["rounds"]]
                base = 100 * (report["base"]["direct_mc"] + report["base"]["indirect_mc"]) / 2
            else:
                ys, base = [100 * r[key] for r in row["rounds"]], 100 * report["base"][key]
            ax.plot([0, *xs], [base, *ys], marker="o", label=method, color=COLORS.get(method))
        ax.set_title(title)
        ax.set_xticks(range(report["rounds"] + 1))
        ax.set_xlabel("round")
        ax.set_ylabel("% correct")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"bench lifelong: {report['model']}, {report['per_round']} facts per round (live version)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_all(report: dict[str, Any], out_dir: Path, json_path: Path | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = json_path or out_dir / "bench_lifelong.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=1))
    (out_dir / "bench_lifelong.md").write_text(markdown(report))
    if any(row["rounds"] for row in report["methods"].values()):
        plot(report, out_dir / "bench_lifelong.png")
