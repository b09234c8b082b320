"""The learning benchmark's report: cached job records -> the JSON document, a markdown table and PNG plots.

Headline accuracies are on the *report* facts (see app/bench/facts.py); each method's headline point is its
frontier point with the best *tune*-fact multiple-choice accuracy among those whose general-suite drop is at most
2 points (`MAX_DROP`); if none qualifies, the point with the smallest drop, flagged `"drop_ok": false`.
Means are over seeds; `per_seed` holds the values they average, `std` their spread (population std).
`equal_forgetting` answers the frontier's question (at equal forgetting, which method learned more?) at drops of 2, 5
and 10 points; `cost_ratio` is SDFT's fastest seconds per step over SFT's; `teacher_in_context` is an in-context
reference: the base model answering the questions with the fact's demonstration in its prompt (the SDFT teacher
template).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from app.bench import learn, plots
from app.bench.learn import (
    MAX_DROP,
    METHODS,
    BenchOptions,
    cached,
    frontier_points,
    job_done,
    job_records,
    plan,
    point_config,
    round_config,
    run_seeds,
    sequence_skills,
    teacher_job,
)
from storage.errors import ApprenticeError

METRICS = ("direct", "indirect", "direct_mc", "indirect_mc")
SUMMARY = (*METRICS, "general", "general_drop", "leakage", "seconds")
COST = ("seconds_per_step", "generation_s", "teacher_s", "student_s", "tokens_per_s", "peak_rss_mb")


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def _std(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.pstdev(vals), 4) if len(vals) > 1 else None


def _mc(row: dict[str, Any]) -> float | None:
    parts = [row.get("direct_mc"), row.get("indirect_mc")]
    return None if None in parts else (parts[0] + parts[1]) / 2


def summarize_record(record: dict[str, Any], base_general: float) -> dict[str, Any]:
    """One run's headline numbers: report-split accuracies, general score and drop, leakage, training seconds."""
    report, tune = record["facts"].get("report", {}), record["facts"].get("tune") or record["facts"].get("report", {})
    out = {k: report.get(k) for k in METRICS}
    out |= {"general": record["general"], "general_drop": round(base_general - record["general"], 4)}
    out |= {"leakage": record["leakage"], "seconds": record.get("cost", {}).get("seconds", 0.0), "tune_mc": _mc(tune)}
    return out


def frontier(bench: Any, base_general: float) -> dict[str, list[dict[str, Any]]]:
    """Per method, one entry per (lr, steps) point with at least one finished seed (missing seeds are left out)."""

    out: dict[str, list[dict[str, Any]]] = {}
    for m in METHODS:
        out[m] = []
        for lr, steps in frontier_points(bench, m):
            found = [cached(bench, point_config(bench, m, lr, steps, seed)[1]) for seed in run_seeds(bench)]
            runs = [r for r in found if r is not None]
            if not runs:
                continue
            rows = [summarize_record(r, base_general) for r in runs]
            point: dict[str, Any] = {"lr": lr, "steps": steps, "seeds": [r["seed"] for r in runs]}
            point |= {k: _mean([row[k] for row in rows]) for k in (*SUMMARY, "tune_mc")}
            point["per_seed"] = {k: [row[k] for row in rows] for k in SUMMARY}
            point["std"] = {k: _std([row[k] for row in rows]) for k in SUMMARY}
            point["cost"] = {k: _mean([r["cost"][k] for r in runs]) for k in COST}
            point["default"] = (lr, steps) == bench.default_point(m)
            out[m].append(point)
    return out


def best_under(points: list[dict[str, Any]], max_drop: float) -> dict[str, Any] | None:
    """The point with the best tune-fact accuracy (then the cheapest) among those losing at most `max_drop`."""
    ok = [p for p in points if p["general_drop"] is not None and p["general_drop"] <= max_drop + 1e-9]
    return max(ok, key=lambda p: (p["tune_mc"] or 0.0, -(p["seconds"] or 0.0)), default=None)


def headline(points: list[dict[str, Any]], max_drop: float) -> dict[str, Any] | None:
    if not points:
        return None
    best = best_under(points, max_drop)
    if best is not None:
        return {**best, "drop_ok": True}
    return {**min(points, key=lambda p: p["general_drop"]), "drop_ok": False}


def cost_ratio(front: dict[str, list[dict[str, Any]]]) -> float | None:
    """SDFT/SFT wall time at equal steps: the fastest seconds per step over each method's frontier runs (as `timeit`
    takes the minimum: other work on the machine only ever adds time, and a run that overlapped it says nothing)."""
    per_step = {
        m: [s / p["steps"] for p in points for s in p["per_seed"]["seconds"] if s] for m, points in front.items()
    }
    if not per_step.get("sft") or not per_step.get("sdft"):
        return None
    return round(min(per_step["sdft"]) / min(per_step["sft"]), 2)


DROP_LEVELS = (0.02, 0.05, 0.10)


def equal_forgetting(front: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """At equal forgetting, which method learned more: per general-suite drop level, each method's point (chosen by
    tune-fact accuracy, as the headline) among those that lose at most that much; None where none does."""
    out: dict[str, dict[str, Any]] = {}
    keys = ("lr", "steps", "direct_mc", "indirect_mc", "general_drop")
    for level in DROP_LEVELS:
        best = {m: best_under(points, level) for m, points in front.items()}
        out[f"{level:g}"] = {m: p and {k: p[k] for k in keys} for m, p in best.items()}
    return out


def sequential(bench: Any) -> dict[str, Any]:
    """Round x skill matrices (mean MC accuracy and generation accuracy of each skill's facts; None before the skill
    is taught), the general score after each round, and each earlier skill's final/best ratio."""

    skills = sequence_skills(bench)
    out: dict[str, Any] = {"skills": skills, "mc": {}, "gen": {}, "general": {}, "retention": {}, "per_seed": {}}
    for m in METHODS:
        per_seed = {}
        for seed in run_seeds(bench):
            rounds = []
            for k in range(len(skills)):
                record = cached(bench, round_config(bench, m, seed, k)[1])
                if record is None:
                    break
                rounds.append(record)
            if rounds:
                per_seed[seed] = rounds
        if not per_seed:
            continue
        n_rounds = min(len(v) for v in per_seed.values())

        def matrix(fn: Any, rows_by_seed: dict = per_seed, n: int = n_rounds) -> list[list[float | None]]:
            return [[_mean([fn(rows[k]["facts"].get(f"skill:{s}", {})) for rows in rows_by_seed.values()])
                     if j <= k else None for j, s in enumerate(skills)] for k in range(n)]  # fmt: skip

        out["mc"][m] = matrix(_mc)
        out["gen"][m] = matrix(lambda row: None if row.get("direct") is None else (row["direct"] + row["indirect"]) / 2)
        out["general"][m] = [_mean([rows[k]["general"] for rows in per_seed.values()]) for k in range(n_rounds)]
        out["per_seed"][m] = {str(s): [[_mc(r["facts"].get(f"skill:{sk}", {})) for sk in skills] for r in rows]
                              for s, rows in per_seed.items()}  # fmt: skip
        mat = out["mc"][m]
        out["retention"][m] = {
            s: round(mat[-1][j] / best, 3) if (best := max(row[j] or 0 for row in mat)) else None
            for j, s in enumerate(skills[: n_rounds - 1])
        }
    return out


def in_context(bench: Any) -> dict[str, Any] | None:
    """The in-context reference on the report facts (the base model with the demonstration in its prompt), if
    measured."""

    record = cached(bench, teacher_job(bench)[1])
    if record is None:
        return None
    return {**{k: record["facts"].get("report", {}).get(k) for k in METRICS}, "template": record["template"]}


def job_seconds(bench: Any) -> float:
    """Training plus scoring time summed over the cached records of the run's jobs (a resumed run's wall time only
    counts its last invocation)."""

    names = [name for job in plan(bench) for name in job_records(bench, *job)]
    records = [r for r in (cached(bench, n) for n in names) if r is not None]
    return round(sum(r.get("cost", {}).get("seconds", 0.0) + r.get("eval_seconds", 0.0) for r in records), 1)


def assemble(bench: Any, wall_seconds: float) -> dict[str, Any]:

    base = cached(bench, "base")
    if base is None:
        raise ApprenticeError(f"no base result in {bench.cache}: run the benchmark first")
    base_general = base["general"]
    front = frontier(bench, base_general)
    methods: dict[str, Any] = {"base": {**summarize_record(base, base_general), "seconds": 0.0}}
    for m in METHODS:
        best = headline(front[m], MAX_DROP)
        if best is not None:
            methods[m] = best
    defaults = {m: next((p for p in front[m] if p["default"]), None) for m in METHODS}
    ratio = cost_ratio(front)
    seq, jobs = sequential(bench), plan(bench)
    report = {
        "model": bench.options.model_name,
        "facts": {
            "path": str(bench.options.facts_path),
            "n": len(bench.facts),
            "report": sorted(i for i, r in bench.roles.items() if r == "report"),
            "tune": sorted(i for i, r in bench.roles.items() if r == "tune"),
        },  # fmt: skip
        "seeds": run_seeds(bench),
        "overrides": bench.options.overrides,
        "quick": bench.options.quick,
        "general_suite": {"n": len(bench.general), "base": base_general},
        "base_facts": base["facts"],
        "methods": methods,
        "teacher_in_context": in_context(bench),
        "default_points": {m: {"lr": p["lr"], "steps": p["steps"]} for m, p in defaults.items() if p},
        "cost_ratio": ratio,
        "equal_forgetting": equal_forgetting(front),
        "frontier": front,
        "sequential": seq["mc"],
        "sequential_detail": seq,
        "max_drop": MAX_DROP,
        "jobs": {"done": sum(job_done(bench, *job) for job in jobs), "planned": len(jobs)},
        "wall_seconds": round(wall_seconds, 1),
        "job_seconds": job_seconds(bench),
    }
    report["targets"] = targets(report)
    return report


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each with the numbers it was judged on (None where not measured)."""
    m = report["methods"]
    sft, sdft = m.get("sft"), m.get("sdft")
    out: dict[str, Any] = {}
    if sft and sdft:
        out["direct_sdft_ge_sft"] = sdft["direct_mc"] >= sft["direct_mc"]
        out["indirect_sdft_ge_sft_plus_10"] = sdft["indirect_mc"] >= sft["indirect_mc"] + 0.10
        out["direct_gen_sdft_ge_sft"] = sdft["direct"] >= sft["direct"]
        out["indirect_gen_sdft_ge_sft_plus_10"] = sdft["indirect"] >= sft["indirect"] + 0.10
        out["drop_sdft_le_third_of_sft"] = sdft["general_drop"] <= max(sft["general_drop"], 0) / 3
    if report["cost_ratio"] is not None:
        out["wall_ratio_le_2"] = report["cost_ratio"] <= 2.0
    ret = report["sequential_detail"]["retention"].get("sdft")
    if ret:
        out["sdft_retention_ge_90pct"] = all(v is not None and v >= 0.9 for v in ret.values())
    return out


def write_all(report: dict[str, Any], out_dir: Path, json_path: Path | None = None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [json_path or out_dir / "bench_learn.json", out_dir / "bench_learn.md"]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    paths[0].write_text(json.dumps(report, indent=1) + "\n")
    paths[1].write_text(markdown(report))
    return paths + plots.plot_all(report, out_dir)


def _pct(v: float | None, spread: float | None = None) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}" + (f" ± {100 * spread:.1f}" if spread else "")


def markdown(report: dict[str, Any]) -> str:
    seeds = report["seeds"]
    lines = [f"# Learning benchmark: {report['model']}", "",
             f"{report['facts']['n']} facts ({len(report['facts']['report'])} report, "
             f"{len(report['facts']['tune'])} tune), seeds {seeds}, general suite {report['general_suite']['n']} "
             f"probes{' (quick run)' if report['quick'] else ''}; wall {report['wall_seconds']:.0f} s this invocation, "
             f"{report['job_seconds']:.0f} s of training and scoring summed over jobs; "
             f"{report['jobs']['done']} of {report['jobs']['planned']} jobs done. "
             "Accuracies in % on the report facts (mean ± std over seeds); MC = multiple choice by log-likelihood.",
             "", "| method | lr | steps | direct | indirect | direct MC | indirect MC | general | drop | leaked | "
             "train s |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in report["methods"].items():
        std = row.get("std", {})
        cells = [_pct(row[k], std.get(k)) for k in (*METRICS, "general", "general_drop")]
        flag = "" if row.get("drop_ok", True) else " (drop > 2)"
        lines.append(f"| {name}{flag} | {row.get('lr', '-')} | {row.get('steps', '-')} | " + " | ".join(cells)
                     + f" | {row['leakage']:.1f} | {row['seconds']:.0f} |")  # fmt: skip
    teacher = report.get("teacher_in_context")
    if teacher:
        lines += ["", "In context (the base model with each fact's demonstration in its prompt, the SDFT teacher's "
                  f"template): direct {_pct(teacher['direct'])}, indirect {_pct(teacher['indirect'])}, "
                  f"direct MC {_pct(teacher['direct_mc'])}, indirect MC {_pct(teacher['indirect_mc'])}."]  # fmt: skip
    lines += [
        "",
        "At equal forgetting (each method's point chosen on the tune facts among those whose general drop is "
        "at most the level; report-fact MC, direct / indirect):",
        "",
        "| drop at most | " + " | ".join(report["frontier"]) + " |",
        "|---" * (len(report["frontier"]) + 1) + "|",
    ]
    for level, row in report["equal_forgetting"].items():
        cells = [f"{_pct(p['direct_mc'])} / {_pct(p['indirect_mc'])} (lr {p['lr']:g}, {p['steps']} steps, drop "
                 f"{_pct(p['general_drop'])})" if p else "-" for p in row.values()]  # fmt: skip
        lines.append(f"| {_pct(float(level))} | " + " | ".join(cells) + " |")
    lines += ["", f"SDFT/SFT wall-time ratio (fastest s/step of each method's runs): {report['cost_ratio']}",
              "",
              "| method | s/step | generation s | teacher s | student s | tokens/s | peak RSS MiB |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in report["methods"].items():
        if "cost" in row:
            lines.append(f"| {name} | " + " | ".join(str(row["cost"][k]) for k in COST) + " |")
    lines += ["", "## Frontier (report facts, mean ± std over the seeds done)", "", "| method | lr | steps | seeds | "
              "direct MC | indirect MC | direct | indirect | general drop | leaked | s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for m, points in report["frontier"].items():
        for p in points:
            keys = ("direct_mc", "indirect_mc", "direct", "indirect", "general_drop")
            cells = [_pct(p[k], p["std"].get(k)) for k in keys]
            head = f"| {m}{' (default)' if p['default'] else ''} | {p['lr']:g} | {p['steps']} | {len(p['seeds'])} | "
            lines.append(head + " | ".join(cells) + f" | {p['leakage']:.1f} | {p['seconds']:.0f} |")
    seq = report["sequential_detail"]
    lines += ["", "## Sequential skills (MC accuracy of each skill's facts after each round)", ""]
    for m, mat in seq["mc"].items():
        lines += [
            f"**{m}** (general after each round: {', '.join(_pct(g) for g in seq['general'][m])}; "
            f"final/best per earlier skill: {seq['retention'][m]})",
            "",
            "| round | " + " | ".join(seq["skills"]) + " |",
            "|---" * (len(seq["skills"]) + 1) + "|",
        ]
        lines += [f"| {k + 1} | " + " | ".join(_pct(v) for v in row) + " |" for k, row in enumerate(mat)] + [""]
    lines += ["## Targets", ""] + [f"- {k}: {v}" for k, v in report["targets"].items()]
    return "\n".join(lines) + "\n"


def run_many(runs: list[BenchOptions], workers: int = 1, run_jobs: bool = True) -> list[dict[str, Any]]:
    """Run (or resume) every job of several benchmark runs (app.bench.learn.run_jobs; `run_jobs=False`: none), then
    assemble and write each run's report (JSON, table and plots) into its out_dir."""
    started = time.perf_counter()
    benches = learn.run_jobs(runs, workers) if run_jobs else [learn.prepare(o) for o in runs]
    reports = []
    for bench in benches:
        report = assemble(bench, time.perf_counter() - started)
        write_all(report, Path(bench.options.out_dir), bench.options.json_path)
        reports.append(report)
    return reports


def run_bench(options: BenchOptions, workers: int = 1, run_jobs: bool = True) -> dict[str, Any]:
    """Run (or resume) one benchmark and write its report; see run_many."""
    return run_many([options], workers, run_jobs)[0]
