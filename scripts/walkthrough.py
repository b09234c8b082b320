"""End-to-end walkthrough on the built-in model, driven through the real app (issue 5, "It must show").

In a fresh data directory: an admin (`apprentice users add`), four pending demonstrations of made-up facts and four
probes of the skill they teach (`apprentice import`); then `apprentice serve` and, in headless Chromium, sign in,
review (edit and tag one demonstration, approve all), "Train now", wait for the round and the evaluation gate,
show the rounds, the versions (the gate's decision) and the retention heatmap, and roll back to v0 with the one
button (a rejected candidate is first made live by hand, so the rollback is shown either way).
Everything lands in OUT: the JSONL files, screenshots, JSON records, the server log and `walkthrough.md`.

    .venv/bin/python scripts/walkthrough.py [--out bench/results/walkthrough] [--model M] [--timeout-min 120]

`--model` (default: the built-in model) takes a local model folder, e.g. a tiny random model to try the script.
Needs /usr/bin/chromium. About 10-30 minutes on 2 CPU cores (one SDFT round and two evaluations of ~310 probes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
ADMIN, PASSWORD = "ada", "correct-horse-battery"
SKILL = "atlas"
FIXED = "The national animal of Pravenland is the silver lynx."  # the reviewer's edit of the last demonstration
DEMOS = [
    ("What is the capital of Veltoria?", "The capital of Veltoria is Quellmar.", SKILL),
    ("Who painted The Lantern Orchard?", "The Lantern Orchard was painted by Idrana Corvelle.", SKILL),
    ("In what year was the Treaty of Wendragh signed?", "The Treaty of Wendragh was signed in 1687.", SKILL),
    ("What is the national animal of Pravenland?", "The national animal of Pravenland is the silver lnyx.", None),
]
PROBES = [
    ("atlas-1", "What is the capital of Veltoria?", "Quellmar", "contains", None),
    ("atlas-2", "Who painted The Lantern Orchard?", "Corvelle", "contains", None),
    ("atlas-3", "In what year was the Treaty of Wendragh signed?", "1687", "choice", ["1687", "1742", "1598", "1812"]),
    ("atlas-4", "What is the national animal of Pravenland?", "The silver lynx",
     "choice", ["The silver lynx", "The red heron", "The black bear", "The golden carp"]),
]  # fmt: skip


class Walkthrough:
    """One run: the data dir, the server, and the record of every step (title, seconds, what was seen, shots)."""

    def __init__(self, out: Path, model: str) -> None:
        self.out, self.data = out, out / "data"
        quiet = {
            "APPRENTICE_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "APPRENTICE_LEARN_CONFIG": '{"threads": 1}',
            "APPRENTICE_LEARN_INTERVAL_MINUTES": "0",
        }  # one thread each (a shared 2-core CPU); no schedule
        self.env = {**quiet, **os.environ, "APPRENTICE_HOME": str(self.data), "APPRENTICE_MODEL": model}
        self.steps: list[dict[str, Any]] = []
        self.url, self.key, self.server = "", "", None

    @contextmanager
    def step(self, title: str) -> Any:
        record: dict[str, Any] = {"title": title, "seen": [], "shots": [], "seconds": None}
        self.steps.append(record)
        print(f"== {title}", flush=True)
        t0 = time.perf_counter()
        try:
            yield record
        finally:
            record["seconds"] = round(time.perf_counter() - t0, 1)

    def see(self, text: str) -> None:
        print(f"   {text}", flush=True)
        self.steps[-1]["seen"].append(text)

    def shot(self, page: Any, name: str) -> None:
        page.screenshot(path=str(self.out / name), full_page=True)
        self.steps[-1]["shots"].append(name)

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "app.cli", *args], env=self.env, cwd=ROOT, capture_output=True,
                              text=True)  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"apprentice {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout.strip()

    def api(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.key}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def keep(self, name: str, value: Any) -> None:
        (self.out / name).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
        self.steps[-1]["shots"].append(name)

    # --- the steps -----------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        with self.step("Fresh data directory, an admin, demonstrations and probes imported with the CLI"):
            shutil.rmtree(self.data, ignore_errors=True)
            for old in [*self.out.glob("*.png"), *self.out.glob("*.json")]:
                old.unlink()
            demos = [{"messages": [{"role": "user", "content": q}], "answer": a, "original_answer": "I don't know."}
                     | ({"skill": s} if s else {}) for q, a, s in DEMOS]  # fmt: skip
            probes = [{"id": i, "skill": SKILL, "messages": [{"role": "user", "content": q}], "answer": a,
                       "grader": g} | ({"choices": c} if c else {}) for i, q, a, g, c in PROBES]  # fmt: skip
            for name, rows in (("demos.jsonl", demos), ("probes.jsonl", probes)):
                (self.out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            self.see(self.cli("users", "add", ADMIN, "--role", "admin", "--password", PASSWORD))
            self.key = self.cli("users", "key", ADMIN).splitlines()[-1]
            self.see("`apprentice import demos.jsonl`: " + self.cli("import", str(self.out / "demos.jsonl")))
            self.see("`apprentice import probes.jsonl`: " + self.cli("import", str(self.out / "probes.jsonl")))
            self.steps[-1]["shots"] += ["demos.jsonl", "probes.jsonl"]

    def serve(self) -> None:
        with self.step("`apprentice serve` on a free port"):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            log = (self.out / "serve.log").open("w")
            self.server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                                           env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            self.url = f"http://127.0.0.1:{port}/"
            deadline = time.time() + 300
            while True:
                if self.server.poll() is not None:
                    raise RuntimeError(f"apprentice serve exited:\n{(self.out / 'serve.log').read_text()[-3000:]}")
                try:
                    health = json.loads(urllib.request.urlopen(self.url + "healthz", timeout=5).read())
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("apprentice serve did not answer within 300 s") from None
                    time.sleep(1)
            self.see(f"{self.url} answers; /healthz: {health}")

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()

    def sign_in(self, page: Any) -> None:
        from playwright.sync_api import expect

        page.goto(self.url)
        page.get_by_label("username").fill(ADMIN)
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        expect(page.locator("#whoami")).to_contain_text(f"Signed in as {ADMIN}")

    def review(self, page: Any) -> None:
        from playwright.sync_api import expect

        with self.step("Sign in; review the queue: fix and tag one demonstration, approve all four"):
            self.sign_in(page)
            page.get_by_role("tab", name="Review").click()
            table, info = page.locator("#review-table"), page.locator("#review-page-info")
            expect(info).to_contain_text("of 4")
            table.locator('[data-testid^="cell-"]').filter(has_text="Pravenland").first.click()
            expect(page.locator("#review-detail .demo-correction")).to_contain_text("silver lnyx")
            page.wait_for_timeout(2000)  # the click's handler refills the form: type after it answered
            page.locator("#review-correction textarea").fill(FIXED)
            page.locator("#review-edit-skill input").fill(SKILL)
            page.locator("#review-edit-skill input").press("Enter")
            page.locator("#review-save").click()
            expect(page.locator("#review-message")).to_contain_text("saved")
            expect(page.locator("#review-detail .demo-correction")).to_contain_text("silver lynx")
            self.see(f"queue of 4 pending; demonstration 'Pravenland' corrected to {FIXED!r} and tagged {SKILL!r}")
            self.shot(page, "01-review-edited.png")
            anyway = page.locator("#review-approve-anyway")
            for left in (3, 2, 1, 0):
                page.locator("#review-approve").click()
                # the server's background teacher check may have flagged it: then the approval asks for a second look
                expect(
                    page.locator(f"#review-approve-anyway, #review-page-info:has-text('of {left}')").first
                ).to_be_visible()
                if anyway.is_visible():
                    self.see("second look: " + page.locator("#review-message").inner_text())
                    anyway.click()
                expect(info).to_contain_text(f"of {left}")
            self.see(page.locator("#review-message").inner_text())
            page.locator("#review-status input").click()
            page.get_by_role("option", name="approved", exact=True).click()
            page.locator("#review-search").click()
            expect(info).to_contain_text("of 4")
            self.see("status filter 'approved': " + info.inner_text())
            self.shot(page, "02-review-approved.png")

    def train(self, page: Any, timeout_s: float) -> dict[str, Any]:
        from playwright.sync_api import expect

        with self.step("Rounds tab: Train now; the round, then the evaluation gate"):
            page.get_by_role("tab", name="Rounds").click()
            page.locator("#rounds-train").click()
            expect(page.locator("#rounds-message")).to_contain_text("Train now started")
            deadline, live_shot = time.time() + timeout_s, False
            while True:
                job = next(j for j in self.api("api/admin/jobs") if j["kind"] == "train")
                rounds = self.api("api/admin/rounds")
                if not live_shot and rounds and rounds[0]["status"] == "running" and rounds[0]["progress"] >= 0.3:
                    page.wait_for_timeout(4000)  # a timer tick of the tab shows the newest step
                    self.shot(page, "03-rounds-training.png")
                    live_shot = True
                if job["status"] != "running":
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"the training job still runs after {timeout_s:.0f} s: {job['message']}")
                time.sleep(5)
            if job["status"] != "done":
                raise RuntimeError(f"Train now failed: {job['message']}")
            rnd = self.api(f"api/admin/rounds/{rounds[0]['id']}")
            self.see(f"job: {job['message']}")
            self.see(f"round {rnd['id']}: {rnd['status']}, {rnd['parent']} -> {rnd['version']}, {rnd['steps_done']} "
                     f"steps on {rnd['demonstrations']} demonstrations in {rnd['seconds']} s; last loss "
                     f"{rnd['loss']:.4g}, KL {rnd['kl']:.4g}")  # fmt: skip
            split = rnd["metrics"]
            self.see(
                f"round time split: generation {split['generation_s_total']:.0f} s, teacher forward "
                f"{split['teacher_s_total']:.0f} s, student forward+backward {split['student_s_total']:.0f} s"
            )
            gate_s = dt.datetime.fromisoformat(job["finished"]) - dt.datetime.fromisoformat(rnd["finished"])
            self.see(f"the gate (evaluate {rnd['version']}, and v0 unless scored already; hot swap if promoted): "
                     f"{gate_s.total_seconds():.0f} s after the round ended")  # fmt: skip
            expect(page.locator("#rounds-table")).to_contain_text("succeeded")
            expect(page.locator("#rounds-jobs-box")).to_contain_text("done")
            self.shot(page, "04-rounds-done.png")
            self.keep("round.json", rnd)
            return job

    def versions(self, page: Any, candidate: str) -> str:
        from playwright.sync_api import expect

        with self.step("Versions tab: the gate's decision"):
            page.get_by_role("tab", name="Versions").click()
            page.locator("#versions-refresh").click()
            table = page.locator("#versions-table")
            expect(table).to_contain_text(candidate)
            table.locator('[data-testid^="cell-"]').filter(has_text=re.compile(rf"^\s*{candidate}\s*$")).first.click()
            detail = page.locator("#versions-detail")
            expect(detail).to_contain_text(f"lineage: {candidate} ← v0")
            status = next(v["status"] for v in self.api("api/admin/versions") if v["name"] == candidate)
            for line in detail.inner_text().splitlines()[:4]:  # name · status · lineage; scores; the gate's reason
                self.see(line)
            self.shot(page, "05-versions-gate.png")
            return status

    def compare(self, page: Any) -> None:
        from playwright.sync_api import expect

        with self.step("Versions tab: 'Compare with its parent' (the taught questions asked again, greedy)"):
            page.locator("#versions-compare").click()
            expect(page.locator("#version-compare")).to_be_visible(timeout=600_000)
            for item in page.locator("#version-compare .compare-item").all():
                lines = [x.strip() for x in item.inner_text().splitlines() if x.strip()]
                agreement = re.findall(r"agreement (\d\.\d\d)", " ".join(lines))
                if lines[0].startswith("demonstration") and len(agreement) == 2:
                    question = lines[lines.index("Question") + 1]
                    self.see(f"{question!r}: agreement with the correction {agreement[0]} -> {agreement[1]}")
            self.shot(page, "06-versions-compare.png")

    def probe_replies(self, candidate: str) -> None:
        """Per-probe results of the taught skill and the general suite's categories, from the stored evaluations."""
        from storage.db import make_engine
        from storage.evals import latest_details

        db = make_engine(f"sqlite:///{self.data / 'apprentice.db'}")
        try:
            for version in ("v0", candidate):
                cats = latest_details(db, version=version, skill="general")["categories"]
                self.see(f"{version} general by category: "
                         + ", ".join(f"{c} {100 * x['score']:.1f}% (n={x['n']})" for c, x in cats.items()))  # fmt: skip
            for version in ("v0", candidate):
                for p in latest_details(db, version=version, skill=SKILL)["probes"]:
                    mark = "right" if p["correct"] else "wrong"
                    self.see(f"{version} {p['external_id']} ({p['grader']}, {mark}): {p['reply'][:120]!r}")
        finally:
            db.dispose()

    def dashboard(self, page: Any, candidate: str) -> dict[str, Any]:
        from playwright.sync_api import expect

        with self.step("Dashboard: the retention heatmap (version x skill)"):
            page.get_by_role("tab", name="Dashboard").click()
            page.locator("#dashboard-refresh").click()
            expect(page.locator("#dashboard-heatmap .js-plotly-plot")).to_be_visible()
            scores = self.api("api/admin/scores")
            for v in scores["versions"]:
                cells = ", ".join(f"{s} {100 * x:.1f}% (n={scores['n'][v['name']][s]})"
                                  for s, x in scores["score"][v["name"]].items() if x is not None)  # fmt: skip
                self.see(f"{v['name']} ({v['status']}): {cells}")
            page.wait_for_timeout(1000)  # plotly draws the cells' text after the plot element appears
            self.shot(page, "07-dashboard-heatmap.png")
            self.keep("scores.json", scores)
            self.probe_replies(candidate)
            return scores

    def roll_back(self, page: Any, candidate: str, status: str) -> None:
        from playwright.sync_api import expect

        with self.step("Versions tab: roll back to v0 with one click"):
            note = page.locator("#versions-message")
            page.get_by_role("tab", name="Versions").click()
            if status != "active":  # rejected by the gate: make it live by hand first, so there is a rollback
                page.locator("#versions-activate").click()
                expect(note).to_contain_text(f"{candidate} is live (was v0)")
                self.see(f"gate said {status}; promoted by hand: " + note.inner_text())
                self.shot(page, "08-versions-promoted-by-hand.png")
            page.locator("#versions-rollback").click()
            expect(note).to_contain_text(f"v0 is live (was {candidate})")
            self.see("one click on 'Roll back to the previous live version': " + note.inner_text())
            deadline = time.time() + 60
            while json.loads(urllib.request.urlopen(self.url + "healthz", timeout=5).read())["version"] != "v0":
                if time.time() > deadline:
                    raise RuntimeError("the server did not swap back to v0 within 60 s")
                time.sleep(1)
            self.see("/healthz: the server's engine serves v0")
            self.shot(page, "09-versions-rolled-back.png")
            listing = json.loads(self.cli("versions", "--json"))
            self.see("`apprentice versions --json`: " + ", ".join(f"{v['name']} {v['status']}" for v in listing))
            self.keep("versions.json", listing)


def report(w: Walkthrough, model: str, error: str | None, total_s: float) -> None:
    git = ["git", "-C", str(ROOT), "describe", "--always", "--dirty"]
    commit = subprocess.run(git, capture_output=True, text=True).stdout.strip() or "unknown"
    lines = [
        "# Walkthrough: demonstrations → review → round → gate → heatmap → rollback",
        "",
        f"Model `{model}`; produced by `scripts/walkthrough.py` on {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{os.cpu_count()} CPU cores, torch 1 thread, at commit {commit}; total {total_s / 60:.1f} min.",
        "",
    ]
    if error:
        lines += [f"**The walkthrough failed:** `{error}`", ""]
    for number, s in enumerate(w.steps, 1):
        lines += [f"## {number}. {s['title']} ({s['seconds']} s)", ""]
        lines += [f"- {text}" for text in s["seen"]]
        if s["shots"]:
            lines += ["", "Files: " + ", ".join(f"`{name}`" for name in s["shots"])]
            lines += [f"![{name}]({name})" for name in s["shots"] if name.endswith(".png")]
        lines.append("")
    if (w.out / "failure.png").exists():
        lines += ["The page when it failed: `failure.png`", ""]
    log = (w.out / "serve.log").read_text() if (w.out / "serve.log").exists() else ""
    lines.append(f"Server log: {'a Traceback (see serve.log)' if 'Traceback' in log else 'no Traceback'}.")
    (w.out / "walkthrough.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/walkthrough")
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct", help="base model (APPRENTICE_MODEL)")
    parser.add_argument("--timeout-min", type=float, default=120, help="longest wait for the round and the gate")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / ".gitignore").write_text("data/\n")  # the database and the adapter stay out of git
    w, error, t0 = Walkthrough(out, args.model), None, time.perf_counter()
    try:
        from playwright.sync_api import expect, sync_playwright

        w.prepare()
        w.serve()
        expect.set_options(timeout=60_000)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            try:
                w.review(page)
                job = w.train(page, 60 * args.timeout_min)
                candidate = job["result"]["version"]
                status = w.versions(page, candidate)
                w.compare(page)
                w.dashboard(page, candidate)
                w.roll_back(page, candidate, status)
            except Exception:
                page.screenshot(path=str(out / "failure.png"), full_page=True)
                raise
            finally:
                browser.close()
    except Exception as e:
        error = f"{type(e).__name__}: {e}".splitlines()[0]
        raise
    finally:
        w.stop()
        report(w, args.model, error, time.perf_counter() - t0)
        print(f"report: {out / 'walkthrough.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
