"""`apprentice bench learn`: does the model learn from demonstrations without forgetting? Base vs SFT vs SDFT.

Every trained version goes through the project's own round code, `learner.training.train` (same LoRA config, same
optimizer steps, same seeds for both methods), is saved as a peft adapter and scored by `learner.evaluate` (greedy
generation + multiple choice by log-likelihood) on the fact probes and on the general suite. Jobs:

    base                       the starting version, scored once
    teacher                    the starting version with each fact's demonstration in its prompt (the SDFT teacher
                               template): an in-context reference, facts only
    frontier (method, lr, steps, seed)   train on every fact's demonstration, score; the default point is one of them
    sequential (method, seed, round k)   train on skill k's demonstrations from the method's own round k-1 adapter

Each finished job is cached as JSON under OUT/cache/<fingerprint>/ (the fingerprint covers the facts, the names, the
model, the general-suite selection and the scoring method; the job name covers the learner config), so a killed run
resumes where it stopped. `app.bench.learn_report` turns the cached records into the report (JSON, table, plots).

    from app.bench.learn import BenchOptions
    from app.bench.learn_report import run_bench
    report = run_bench(BenchOptions(model_dir=..., out_dir=Path("bench-out"), quick=True))
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.bench import facts as bf
from learner.config import LearnerConfig, default_preset
from learner.evaluate import (
    METHOD,  # in the cache key: scores from another scoring method are stale
    EvalConfig,
    load_version,
    score_probes,
)
from learner.probes import ProbeSpec, load_general_suite
from learner.training import train

METHODS = ("sft", "sdft")
MAX_DROP = 0.02  # the headline point: best tune-split accuracy with a general-suite drop of at most 2 points


@dataclass
class BenchOptions:
    model_dir: str
    out_dir: Path
    json_path: Path | None = None  # default: OUT/bench_learn.json
    cache_dir: Path | None = None  # default: OUT/cache (runs sharing a cache share their common jobs)
    model_name: str = "builtin:smollm2-135m-instruct"
    facts_path: Path = bf.FACTS
    names_path: Path | None = None  # None: facts_names.txt for the shipped facts, else names derived from the facts
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    quick: bool = False
    quick_per_skill: int = 4
    general_n: int | None = None  # None: the whole general suite; N: a fixed, evenly spread subset of N probes
    learning_rates: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3])
    # x the default point's steps: at the default point both methods already lose > 2 general points (--quick)
    step_factors: list[float] = field(default_factory=lambda: [0.5, 1.0])
    rounds: int = 3
    sequential: bool = True  # False: skip the sequential-skills rounds (variant sweeps)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> LearnerConfig fields
    eval_max_new_tokens: int = 48  # greedy reply limit when scoring (the same as `apprentice eval`)
    # prompts scored together: on the built-in model 48 was 1.4x faster than 16 with the same 182 replies (1 thread)
    eval_batch_size: int = 48
    threads: int = 0
    progress: bool = True


@dataclass
class Bench:
    """Everything the jobs share, loaded once."""

    options: BenchOptions
    facts: list[bf.Fact]
    roles: dict[str, str]
    names: list[str]
    general: list[ProbeSpec]
    cache: Path

    def config(self, method: str, **changes: Any) -> LearnerConfig:
        preset = default_preset(self.options.model_name)
        overrides = {**self.options.overrides.get(method, {}), **changes}
        return LearnerConfig.preset(preset, method=method, **overrides)

    def default_point(self, method: str) -> tuple[float, int]:
        cfg = self.config(method)
        return cfg.learning_rate, cfg.optimizer_steps(len(self.facts))


def general_subset(specs: list[ProbeSpec], n: int | None) -> list[ProbeSpec]:
    """Every k-th probe in file order (the suite is grouped by category, so the subset keeps its mix)."""
    if n is None or n >= len(specs):
        return specs
    step = len(specs) / n
    return [specs[int(i * step)] for i in range(n)]


def prepare(options: BenchOptions) -> Bench:
    facts = bf.load_facts(options.facts_path)
    names_path = options.names_path
    if names_path is None and Path(options.facts_path).resolve() == bf.FACTS.resolve():
        names_path = bf.FACT_NAMES
    names = bf.load_names(names_path, facts)
    if options.quick:
        facts = bf.quick_subset(facts, options.quick_per_skill)
    roles = {f.id: "report" for f in facts} if options.quick else bf.split(facts)
    general = general_subset(load_general_suite(), options.general_n)

    scoring = [METHOD, options.eval_max_new_tokens]
    blob = json.dumps(
        [[f.__dict__ for f in facts], names, options.model_name, [g.external_id for g in general], roles, scoring],
        default=lambda o: o.__dict__,
        sort_keys=True,
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    cache = Path(options.cache_dir or Path(options.out_dir) / "cache") / key
    (cache / "runs").mkdir(parents=True, exist_ok=True)
    return Bench(options, facts, roles, names, general, cache)


def _rss_bytes() -> int:
    """Resident memory now (Linux /proc); elsewhere the process's peak so far (getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak resident memory (MiB) of this process while the block runs (sampled), and CUDA's peak allocation."""

    def __enter__(self) -> PeakMemory:
        import torch

        self.peak, self._stop = 0, threading.Event()
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, _rss_bytes())
            if self._stop.wait(0.05):
                return

    def __exit__(self, *exc: object) -> None:
        import torch

        self._stop.set()
        self._thread.join()
        self.rss_mb = round(self.peak / 2**20, 1)
        self.cuda_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1) if self.cuda else None


def evaluate(bench: Bench, facts: list[bf.Fact], adapter: str | None) -> dict[str, Any]:
    """Fact scores, general-suite score and leakage of one version (the base model plus `adapter`)."""

    t0 = time.perf_counter()
    model, tokenizer = load_version(bench.options.model_dir, adapter)
    config = EvalConfig(batch_size=bench.options.eval_batch_size, choice_batch_size=bench.options.eval_batch_size,
                        max_new_tokens=bench.options.eval_max_new_tokens)  # fmt: skip
    report = score_probes(model, tokenizer, bf.fact_probes(facts) + bench.general, config)
    del model
    fact_results = [r for r in report.probes if r.skill == "fact"]
    general = [r for r in report.probes if r.skill != "fact"]
    generated = [r.reply for r in general if r.grader != "choice"]
    leaks = bf.leaked(generated, bench.names)
    return {
        "facts": bf.fact_scores(fact_results, facts, bench.roles),
        "general": sum(r.correct for r in general) / max(len(general), 1),
        "general_n": len(general),
        "leakage": len(leaks),
        "leaked_replies": leaks[:10],
        "eval_seconds": round(time.perf_counter() - t0, 2),
    }


def evaluate_in_context(bench: Bench, template: str) -> dict[str, Any]:
    """An in-context reference: the base model answering the fact questions with each fact's demonstration in its
    prompt (`template`, the SDFT teacher's), scored like any version (facts only)."""

    t0 = time.perf_counter()
    model, tokenizer = load_version(bench.options.model_dir, None)
    config = EvalConfig(batch_size=bench.options.eval_batch_size, choice_batch_size=bench.options.eval_batch_size,
                        max_new_tokens=bench.options.eval_max_new_tokens)  # fmt: skip
    report = score_probes(model, tokenizer, bf.fact_probes(bench.facts, template), config)
    scores = bf.fact_scores(report.probes, bench.facts, bench.roles)
    return {"template": template, "facts": scores, "eval_seconds": round(time.perf_counter() - t0, 2)}


def train_and_score(
    bench: Bench,
    cfg: LearnerConfig,
    facts: list[bf.Fact],
    scored: list[bf.Fact],
    *,
    parent: str | None,
    keep: Path | None,
    bar: Any,
) -> dict[str, Any]:
    """Train with `cfg` on `facts` (from `parent`), save the adapter (to `keep`, else a temp folder) and score it on
    the `scored` facts and the general suite."""

    def on_step(record: dict[str, Any], progress: float) -> None:
        if bar is not None:
            bar.set_postfix_str(f"{cfg.method} step {record['step']}/{cfg.steps} loss {record['loss']:.3f}")

    with PeakMemory() as mem:
        result = train(bench.options.model_dir, [f.example() for f in facts], cfg, parent_adapter=parent,
                       on_step=on_step)  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="bench-adapter-")) if keep is None else keep
    try:
        result.save(folder)
        metrics, steps = result.metrics, result.steps
        del result
        gc.collect()
        scores = evaluate(bench, scored, str(folder))
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    seconds = metrics["seconds"]
    cost = {
        "seconds": seconds,
        "steps": metrics["steps"],
        "seconds_per_step": round(seconds / max(metrics["steps"], 1), 3),
        "generation_s": round(metrics["generation_s_total"], 2),
        "teacher_s": round(metrics["teacher_s_total"], 2),
        "student_s": round(metrics["student_s_total"], 2),
        "tokens": metrics["tokens_total"],
        "tokens_per_s": round(metrics["tokens_total"] / max(seconds, 1e-9), 1),
        "peak_rss_mb": mem.rss_mb,
        "peak_cuda_mb": mem.cuda_mb,
    }
    trace = {k: [round(float(s[k]), 4) for s in steps if s.get(k) is not None] for k in ("loss", "kl")}
    return {"config": cfg.to_dict(), "cost": cost, "train": {k: v for k, v in metrics.items()}, "trace": trace,
            **scores}  # fmt: skip


def sequence_skills(bench: Bench) -> list[str]:
    return bf.skills_in_order(bench.facts)[: 2 if bench.options.quick else bench.options.rounds]


def config_digest(cfg: LearnerConfig, *extra: Any) -> str:
    """Eight hex digits naming a cached job: the config's fields that differ from LearnerConfig's defaults, and
    `extra`. A new field whose default keeps the old behaviour leaves every existing cache's name as it was."""
    defaults = LearnerConfig().to_dict()
    changed = {k: v for k, v in cfg.to_dict().items() if v != defaults[k]}
    return hashlib.sha256(json.dumps([changed, *extra], sort_keys=True).encode()).hexdigest()[:8]


def _job_name(kind: str, cfg: LearnerConfig | None, seed: int, extra: str = "") -> str:
    if cfg is None:
        return kind
    return f"{kind}-{cfg.method}-lr{cfg.learning_rate:g}-st{cfg.steps}-s{seed}{extra}-{config_digest(cfg)}"


def _cached(bench: Bench, name: str) -> dict[str, Any] | None:
    path = bench.cache / "runs" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _store(bench: Bench, name: str, record: dict[str, Any]) -> dict[str, Any]:
    path = bench.cache / "runs" / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return record


def frontier_points(bench: Bench, method: str) -> list[tuple[float, int]]:
    """(lr, steps) points: the default point, plus the lr x steps grid unless --quick."""
    lr0, steps0 = bench.default_point(method)
    points = [(lr0, steps0)]
    if not bench.options.quick:
        for lr in bench.options.learning_rates:
            for factor in bench.options.step_factors:
                points.append((lr, max(1, round(steps0 * factor))))
    return list(dict.fromkeys(points))


def run_seeds(bench: Bench) -> list[int]:
    return bench.options.seeds[:1] if bench.options.quick else bench.options.seeds


def point_config(bench: Bench, method: str, lr: float, steps: int, seed: int) -> tuple[LearnerConfig, str]:
    cfg = bench.config(method, learning_rate=lr, steps=steps, seed=seed)
    return cfg, _job_name("point", cfg, seed)


def round_config(bench: Bench, method: str, seed: int, k: int) -> tuple[LearnerConfig, str]:
    """Round k (0-based) of the sequence: the method's default point, steps derived from the skill's facts."""
    skills = sequence_skills(bench)
    cfg = bench.config(method, seed=seed)
    cfg = cfg.replace(steps=cfg.optimizer_steps(sum(f.skill == skills[k] for f in bench.facts)))
    return cfg, _job_name(f"seq{k + 1}", cfg, seed, extra=f"-{'-'.join(skills[: k + 1])}"[:60])


def cached(bench: Bench, name: str) -> dict[str, Any] | None:
    return _cached(bench, name)


def teacher_job(bench: Bench) -> tuple[str, str]:
    """(the SDFT teacher template, the name of its in-context job)."""
    template = bench.config("sdft").teacher_template
    return template, "teacher-" + hashlib.sha256(template.encode()).hexdigest()[:8]


def plan(bench: Bench) -> list[tuple[str, Any]]:
    """Every job of the run, in the order it runs: base, the teacher in context, default points, the rest of the
    frontier, sequential."""
    jobs: list[tuple[str, Any]] = [("base", None), ("teacher", (teacher_job(bench)[0],))]
    points = {m: frontier_points(bench, m) for m in METHODS}
    for i in range(max(len(p) for p in points.values())):
        for seed in run_seeds(bench):
            jobs += [("point", (m, *points[m][i], seed)) for m in METHODS if i < len(points[m])]
    if bench.options.sequential:
        jobs += [("sequence", (m, seed)) for seed in run_seeds(bench) for m in METHODS]
    return jobs


def job_records(bench: Bench, kind: str, arg: Any) -> list[str]:
    """The names of the records a job caches (a sequence: one per round)."""
    if kind == "base":
        return ["base"]
    if kind == "teacher":
        return [teacher_job(bench)[1]]
    if kind == "point":
        return [point_config(bench, *arg)[1]]
    method, seed = arg
    return [round_config(bench, method, seed, k)[1] for k in range(len(sequence_skills(bench)))]


def job_done(bench: Bench, kind: str, arg: Any) -> bool:
    return all(_cached(bench, name) is not None for name in job_records(bench, kind, arg))


def job_cost(bench: Bench, kind: str, arg: Any) -> float:
    """A rough relative cost (SDFT steps ~6x SFT's, plus scoring) to start the longest jobs first."""
    if kind in ("base", "teacher"):
        return 1.0
    if kind == "point":
        return (6.0 if arg[0] == "sdft" else 1.0) * arg[2] / 10 + 2.0
    return (6.0 if arg[0] == "sdft" else 1.0) * len(sequence_skills(bench)) * 4


def run_job(bench: Bench, kind: str, arg: Any, bar: Any) -> None:
    if kind == "base":
        if _cached(bench, "base") is None:
            _store(bench, "base", evaluate(bench, bench.facts, None))
    elif kind == "teacher":
        template, name = teacher_job(bench)
        if _cached(bench, name) is None:
            _store(bench, name, evaluate_in_context(bench, template))
    elif kind == "point":
        method, lr, steps, seed = arg
        cfg, name = point_config(bench, method, lr, steps, seed)
        if _cached(bench, name) is None:
            record = train_and_score(bench, cfg, bench.facts, bench.facts, parent=None, keep=None, bar=bar)
            _store(bench, name, {"method": method, "lr": lr, "steps": steps, "seed": seed, **record})
    else:
        run_sequence(bench, *arg, bar=bar)


def run_sequence(bench: Bench, method: str, seed: int, *, bar: Any) -> None:
    """Rounds over the skills in order, each continuing the method's own previous adapter."""
    parent, skills = None, sequence_skills(bench)
    scored = [f for f in bench.facts if f.skill in skills]  # unseen skills are blanked in the matrix later
    for k, skill in enumerate(skills):
        facts = [f for f in bench.facts if f.skill == skill]
        cfg, name = round_config(bench, method, seed, k)
        keep = bench.cache / "adapters" / name
        if _cached(bench, name) is None or not (keep / "adapter_config.json").exists():
            keep.mkdir(parents=True, exist_ok=True)
            record = train_and_score(bench, cfg, facts, scored, parent=parent, keep=keep, bar=bar)
            _store(bench, name, {"method": method, "seed": seed, "round": k + 1, "skill": skill, **record})
        parent = str(keep)


def _seed_of(kind: str, arg: Any) -> int:
    return -1 if kind in ("base", "teacher") else arg[-1]


def _worker(options: BenchOptions, kind: str, arg: Any) -> str:
    import torch

    torch.set_num_threads(max(options.threads, 1))
    run_job(prepare(options), kind, arg, None)
    return f"{kind} {arg}"


def run_jobs(runs: list[BenchOptions], workers: int = 1) -> list[Bench]:
    """Run (or resume) every job of several benchmark runs (jobs shared between them run once), with `workers`
    processes when > 1 (each its own model copies: for a GPU, or a CPU with many cores); returns the runs, prepared.
    app.bench.learn_report.run_bench runs them and writes the report."""
    import torch

    benches = [prepare(o) for o in runs]
    jobs: dict[tuple[str, str], tuple[BenchOptions, str, Any, float]] = {}
    for bench in benches:
        for kind, arg in plan(bench):
            changes = json.dumps(bench.options.overrides.get(arg[0], {}) if arg else {}, sort_keys=True)
            key = (str(bench.cache), f"{kind}{arg}{changes}")
            jobs.setdefault(key, (bench.options, kind, arg, job_cost(bench, kind, arg)))
    todo = list(jobs.values())
    progress = runs[0].progress
    if workers <= 1:
        if runs[0].threads:
            torch.set_num_threads(runs[0].threads)
        with tqdm(todo, desc="bench learn", unit="job", disable=not progress) as bar:
            for options, kind, arg, _ in bar:
                bar.set_description(f"bench learn: {kind} {arg if arg is not None else ''}")
                run_job(prepare(options), kind, arg, bar)
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        # seed by seed (a cut-short run still has whole seeds), longest first inside a seed: the pool balances itself
        todo.sort(key=lambda j: (_seed_of(j[1], j[2]), -j[3]))
        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_worker, *job[:3]) for job in todo]
            failed = []
            for fut in tqdm(cf.as_completed(futures), total=len(futures), desc="bench learn", disable=not progress):
                if fut.exception() is not None:  # the other jobs go on; the report leaves this one out
                    failed.append(repr(fut.exception()))
                    print(f"bench learn: a job failed: {failed[-1]}", file=sys.stderr)
        if failed:
            print(f"bench learn: {len(failed)} job(s) failed; rerun to retry them", file=sys.stderr)
    return benches
