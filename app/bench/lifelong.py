"""`apprentice bench lifelong`: many small rounds under the gate, the way users run Apprentice.

One job is one method and seed, run through the product's own code: a fresh database; per round, K new facts'
demonstrations imported and approved through storage/ (each with the base model's greedy reply as the original
answer a user corrected); `learner.rounds.run_round` with the deployment's default LearnerConfig (steps derived from
the round, as the scheduler does); the real promotion gate (`learner.gate.gate_round`, default GateConfig); the next
round starts from whatever is live. After every round the **live** version is scored on every fact taught so far
(multiple choice, greedy generation on the demonstration's own question and on the paraphrased ones) and on the
general suite (the gate's stored scores and replies where it scored that version).

Facts are taught in skill-interleaved order (one fact of each skill in turn). Resumable: after each round the job's
database is copied beside the round's record; a killed job restarts from its last copy (version folders the copy does
not know are removed). `app.bench.lifelong_report` assembles JSON, table and plots.

    report = run_lifelong(LifelongOptions(model_dir=..., out_dir=Path("bench-out/lifelong"), quick=True))
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.bench import facts as bf
from app.bench.learn import config_digest, general_subset
from learner.config import LearnerConfig, default_preset
from learner.evaluate import METHOD, EvalConfig, load_version, score_probes
from learner.gate import fresh_scores, gate_round
from learner.probes import GENERAL_SUITE, ProbeSpec, load_general_suite, probe_to_json
from learner.rounds import run_round
from learner.training import anchor_prompts
from storage import evals, review, versions
from storage.db import make_engine, upgrade

METHODS = ("sdft", "sft")
SPLITS = ("all", "tune", "report")
# the teacher templates' copyable phrasing, counted in general-suite replies ("The answer is 9 times 7 is 64.")
PHRASE = re.compile(r"\b(?:the )?(?:correct )?answer is\b", re.I)


@dataclass
class LifelongOptions:
    model_dir: str
    out_dir: Path
    json_path: Path | None = None  # default: OUT/bench_lifelong.json
    model_name: str = "builtin:smollm2-135m-instruct"
    facts_path: Path = bf.FACTS
    names_path: Path | None = None
    split: str = "all"  # which facts are taught: all, or only the tune / report split (bench_facts.split)
    rounds: int = 8
    per_round: int = 6
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    general_n: int | None = None  # None: the whole general suite (what the gate uses in a deployment)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> LearnerConfig fields
    eval_batch_size: int = 48
    eval_max_new_tokens: int = 48  # greedy reply limit when scoring (as `apprentice eval` and the gate)
    threads: int = 0
    progress: bool = True

    @classmethod
    def quick_defaults(cls) -> dict[str, Any]:
        return {"rounds": 3, "per_round": 4, "seeds": [0], "general_n": 60}


@dataclass
class Lifelong:
    """What every job of a run shares."""

    options: LifelongOptions
    taught: list[bf.Fact]  # in teaching order; round k teaches taught[(k-1)K : kK]
    roles: dict[str, str]
    names: list[str]
    general_path: Path  # the general suite the gate (and the scores) use
    cache: Path

    def config(self, method: str, seed: int) -> LearnerConfig:
        preset = default_preset(self.options.model_name)
        return LearnerConfig.preset(preset, method=method, seed=seed, **self.options.overrides.get(method, {}))

    def eval_config(self) -> EvalConfig:
        size = self.options.eval_batch_size
        return EvalConfig(batch_size=size, choice_batch_size=size, general_suite=self.general_path,
                          max_new_tokens=self.options.eval_max_new_tokens)  # fmt: skip

    def round_facts(self, k: int) -> list[bf.Fact]:
        n = self.options.per_round
        return self.taught[(k - 1) * n : k * n]


def teaching_order(facts: list[bf.Fact]) -> list[bf.Fact]:
    """One fact of each skill in turn (each skill in file order)."""
    by_skill: dict[str, list[bf.Fact]] = defaultdict(list)
    for f in facts:
        by_skill[f.skill].append(f)
    out = []
    for i in range(max(len(v) for v in by_skill.values())):
        out += [v[i] for v in by_skill.values() if i < len(v)]
    return out


def prepare(options: LifelongOptions) -> Lifelong:

    if options.split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}")
    facts = bf.load_facts(options.facts_path)
    names_path = options.names_path
    if names_path is None and Path(options.facts_path).resolve() == bf.FACTS.resolve():
        names_path = bf.FACT_NAMES
    names = bf.load_names(names_path, facts)
    roles = bf.split(facts)
    pool = [f for f in teaching_order(facts) if options.split == "all" or roles[f.id] == options.split]
    need = options.rounds * options.per_round
    if len(pool) < need:
        raise ValueError(
            f"{options.rounds} rounds x {options.per_round} facts need {need} facts; the fact file has {len(pool)}"
            f"{'' if options.split == 'all' else f' in its {options.split} split'}"
        )
    taught = pool[:need]
    general = general_subset(load_general_suite(), options.general_n)
    blob = json.dumps(
        [[f.__dict__ for f in taught], names, options.model_name, [g.external_id for g in general], METHOD],
        default=lambda o: o.__dict__,
        sort_keys=True,
    )
    cache = Path(options.out_dir) / "cache" / hashlib.sha256(blob.encode()).hexdigest()[:12]
    cache.mkdir(parents=True, exist_ok=True)
    general_path = GENERAL_SUITE
    if options.general_n is not None:
        general_path = cache / "general.jsonl"
        lines = "".join(json.dumps(probe_to_json(g)) + "\n" for g in general)
        if not general_path.exists() or general_path.read_text() != lines:
            general_path.write_text(lines)
    return Lifelong(options, taught, roles, names, general_path, cache)


def fact_specs(facts: list[bf.Fact]) -> list[ProbeSpec]:
    """bench learn's fact probes plus the demonstration's own question, generated greedily (`|same|0|gen`)."""
    same = [
        ProbeSpec("fact", f.messages, f.direct[0].answer, "contains", external_id=f"{f.id}|same|0|gen") for f in facts
    ]
    return bf.fact_probes(facts) + same


def per_fact(results: list[Any]) -> dict[str, dict[str, float]]:
    """fact id -> {direct, indirect, same (generated), direct_mc, indirect_mc}: fraction of its questions right."""
    raw: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        fid, kind, _, mode = r.external_id.split("|")
        raw[fid][kind + ("_mc" if mode == "mc" else "")].append(bool(r.correct))
    return {fid: {k: sum(v) / len(v) for k, v in kinds.items()} for fid, kinds in raw.items()}


def summarize_facts(scores: dict[str, dict[str, float]], ids: list[str]) -> dict[str, float]:
    """Means over facts: direct_mc, indirect_mc, same_gen, para_gen (generation on direct and indirect questions)."""

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    return {
        "direct_mc": mean([scores[i]["direct_mc"] for i in ids]),
        "indirect_mc": mean([scores[i]["indirect_mc"] for i in ids]),
        "same_gen": mean([scores[i]["same"] for i in ids]),
        "para_gen": mean([(scores[i]["direct"] + scores[i]["indirect"]) / 2 for i in ids]),
    }


def general_replies(report_probes: list[Any]) -> list[str]:
    return [p.reply for p in report_probes if p.grader != "choice"]


def score_version(run: Lifelong, facts: list[bf.Fact], adapter: str | None, *, general: bool) -> dict[str, Any]:
    """A version's per-fact scores (and, with `general`, its general-suite score, replies and phrase rate)."""

    specs = fact_specs(facts) + (load_general_suite(run.general_path) if general else [])
    model, tokenizer = load_version(run.options.model_dir, adapter)
    report = score_probes(model, tokenizer, specs, run.eval_config())
    facts_done = [r for r in report.probes if r.skill == "fact"]
    out: dict[str, Any] = {"facts": per_fact(facts_done)}
    # the greedy reply to each demonstration's own question: for the base model, the answer a user corrects
    out["same_replies"] = {r.external_id.split("|")[0]: r.reply for r in facts_done if "|same|" in r.external_id}
    if general:
        rest = [r for r in report.probes if r.skill != "fact"]
        out |= general_summary(run, sum(r.correct for r in rest) / len(rest), general_replies(rest))
    return out


def general_summary(run: Lifelong, score: float, replies: list[str]) -> dict[str, Any]:
    return {
        "general": score,
        "phrase_rate": sum(bool(PHRASE.search(r)) for r in replies) / max(len(replies), 1),
        "leaked": len(bf.leaked(replies, run.names)),
    }


def base_job(run: Lifelong) -> dict[str, Any]:
    """The base model on every taught fact and the general suite, and its greedy replies to the demonstrations'
    questions (the original answers the simulated users correct). Cached."""
    path = run.cache / "base.json"
    if path.exists():
        return json.loads(path.read_text())
    record = score_version(run, run.taught, None, general=True)
    record["originals"] = record.pop("same_replies")
    record |= summarize_facts(record["facts"], [f.id for f in run.taught])
    return _write_json(path, record)


def _write_json(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return record


def job_dir(run: Lifelong, method: str, seed: int) -> Path:
    """The job's folder, named by its learner config and its KL anchor's prompts (the pool is a file)."""
    config = run.config(method, seed)
    pool = anchor_prompts(config) if config.anchor_weight > 0 else []
    return run.cache / f"{method}-s{seed}-{config_digest(config, pool)}"


def job_records(run: Lifelong, method: str, seed: int, resumable: bool = False) -> list[dict[str, Any]]:
    """The job's finished rounds, in order: their records alone (`rounds/*.json`, which can be kept or moved without
    the database copies), or with `resumable` only the rounds up to the first whose database copy is missing (what
    an unfinished job can resume from)."""
    rounds = job_dir(run, method, seed) / "rounds"
    out = []
    for k in range(1, run.options.rounds + 1):
        if not (rounds / f"r{k}.json").exists():
            break
        out.append(json.loads((rounds / f"r{k}.json").read_text()))
    if resumable and len(out) < run.options.rounds:
        out = out[: next((k for k in range(len(out)) if not (rounds / f"r{k + 1}.db").exists()), len(out))]
    return out


def _restore(folder: Path, done: int) -> Path:
    """The job's data folder as it was after round `done` (0: empty)."""
    data = folder / "data"
    if done == 0:
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        return data
    for suffix in ("", "-wal", "-shm"):
        Path(f"{data / 'apprentice.db'}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(folder / "rounds" / f"r{done}.db", data / "apprentice.db")
    with sqlite3.connect(data / "apprentice.db") as db:
        known = {row[0] for row in db.execute("SELECT name FROM model_versions")}
    for leftover in (data / "versions").glob("*"):
        if leftover.name not in known:
            shutil.rmtree(leftover, ignore_errors=True)
    return data


def _snapshot(data: Path, target: Path) -> None:
    tmp = target.with_suffix(".tmp")
    with sqlite3.connect(data / "apprentice.db") as src, sqlite3.connect(tmp) as dst:
        src.backup(dst)
    os.replace(tmp, target)


def run_job(run: Lifelong, method: str, seed: int, bar: Any = None) -> list[dict[str, Any]]:
    """Run (or resume) one method/seed through every round; returns the round records."""

    base = base_job(run)
    folder = job_dir(run, method, seed)
    (folder / "rounds").mkdir(parents=True, exist_ok=True)
    records = job_records(run, method, seed, resumable=True)
    data = _restore(folder, len(records))
    db = make_engine(f"sqlite:///{data / 'apprentice.db'}")
    upgrade(db)
    versions.ensure_base_version(db)
    config = run.config(method, seed)
    for k in range(len(records) + 1, run.options.rounds + 1):
        if bar is not None:
            bar.set_description(f"bench lifelong: {method} seed {seed} round {k}/{run.options.rounds}")
        items = [
            {"messages": f.messages, "answer": f.answer, "skill": f.skill, "original_answer": base["originals"][f.id]}
            for f in run.round_facts(k)
        ]
        review.import_demonstrations(db, items=items, approve=True)
        t0 = time.perf_counter()
        outcome = run_round(db, model_dir=run.options.model_dir, data_dir=data, config=config)
        train_s = time.perf_counter() - t0
        promoted, reason, gate_s = False, outcome.message, 0.0
        if outcome.status == "succeeded":
            t1 = time.perf_counter()
            decision = gate_round(db, run.options.model_dir, outcome.version, eval_config=run.eval_config())
            promoted, reason, gate_s = decision.promote, decision.reason, time.perf_counter() - t1
        record = score_live(run, db, k, records[-1] if records else None)
        record.update(round=k, version=outcome.version, promoted=promoted, reason=reason, train_s=round(train_s, 1),
                      gate_s=round(gate_s, 1), steps=outcome.metrics.get("steps"),
                      kl_last=outcome.metrics.get("kl_last"), loss_last=outcome.metrics.get("loss_last"))  # fmt: skip
        _snapshot(data, folder / "rounds" / f"r{k}.db")
        records.append(_write_json(folder / "rounds" / f"r{k}.json", record))
        if bar is not None:
            bar.update(1)
    db.dispose()
    return records


def score_live(run: Lifelong, db: Any, k: int, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The live version after round k: every fact taught so far, the general suite (the gate's stored scores and
    replies for that version when it has them), and each round's facts' mean MC. When the live version is the one
    `previous` (round k-1's record) scored, only round k's facts are scored: greedy scoring is deterministic."""

    live = versions.active_version(db)
    facts = run.taught[: k * run.options.per_round]
    fresh_scores(db, run.options.model_dir, live.name, run.eval_config())  # scores it unless the gate did
    details = evals.latest_details(db, version=live.name, skill="general")
    replies = [p["reply"] for p in details["probes"] if p["grader"] != "choice"]
    score = evals.latest_scores(db, version=live.name)["general"].score
    same = previous is not None and previous.get("live") == live.name and "facts" in previous
    scored = score_version(run, run.round_facts(k) if same else facts, live.adapter_path, general=False)
    if same:
        scored["facts"] = previous["facts"] | scored["facts"]
        scored["same_replies"] = previous["same_replies"] | scored["same_replies"]
    scores = scored["facts"]
    groups = {}
    for j in range(1, k + 1):
        ids = [f.id for f in run.round_facts(j)]
        s = summarize_facts(scores, ids)
        groups[str(j)] = (s["direct_mc"] + s["indirect_mc"]) / 2
    return {
        "live": live.name,
        **summarize_facts(scores, [f.id for f in facts]),
        **general_summary(run, score, replies),
        "group_mc": groups,
        "facts": scores,
        "same_replies": scored["same_replies"],
    }


def _worker(options: LifelongOptions, method: str, seed: int) -> str:
    import torch

    torch.set_num_threads(max(options.threads, 1))
    run_job(prepare(options), method, seed)
    return f"{method} seed {seed}"


def run_jobs(options: LifelongOptions, workers: int = 1) -> None:
    """Run (or resume) every method/seed job of the run (app.bench.lifelong_report.run_lifelong reports them)."""
    import torch

    run = prepare(options)
    if options.threads and workers <= 1:  # parallel workers set their own; the base model is scored on every core
        torch.set_num_threads(options.threads)
    base_job(run)
    jobs = [(m, s) for s in options.seeds for m in options.methods]
    todo = [j for j in jobs if len(job_records(run, *j)) < options.rounds]
    if workers <= 1:
        total = sum(options.rounds - len(job_records(run, *j)) for j in todo)
        with tqdm(total=total, unit="round", disable=not options.progress) as bar:
            for method, seed in todo:
                run_job(run, method, seed, bar)
    else:
        _parallel(options, todo, workers)


def _parallel(options: LifelongOptions, todo: list[tuple[str, int]], workers: int) -> None:
    import concurrent.futures as cf
    import multiprocessing as mp
    import sys

    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_worker, options, m, s) for m, s in todo]
        bar = tqdm(cf.as_completed(futures), total=len(futures), unit="job", disable=not options.progress)
        for fut in bar:
            if fut.exception() is not None:  # the others go on; the report leaves its missing rounds out
                print(f"bench lifelong: a job failed: {fut.exception()!r}; rerun to resume it", file=sys.stderr)
