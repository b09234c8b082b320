"""Which general probes a round's candidate gets right or wrong against the base (v0), by category.

    python categories.py DIR [DIR ...] > categories.txt

Reads every round database (`DIR/cache/*/*/rounds/r*.db`) of `bench lifelong` runs and prints, for every candidate
scored there, the replies that turned right (+) and wrong (-) against v0's, per category of the general suite.
"""

import collections
import glob
import json
import sqlite3
import sys

CATEGORIES = ("arithmetic", "format", "instruction", "knowledge")


def scores(db: str) -> dict[str, dict[str, dict]]:
    rows = sqlite3.connect(db).execute("select version, details from eval_results where skill='general' order by id")
    return {version: {p["external_id"]: p for p in json.loads(details)["probes"]} for version, details in rows}


def main(folders: list[str]) -> None:
    seen = set()
    for folder in folders:
        for db in sorted(glob.glob(f"{folder}/cache/*/*/rounds/r*.db")):
            job = db.split("/")[-3]
            evals = scores(db)
            base = evals.pop("v0", None)
            for version, probes in evals.items():
                if base is None or (folder, job, version) in seen:
                    continue
                seen.add((folder, job, version))
                moved = collections.Counter()
                for key, p in probes.items():
                    if p["correct"] != base[key]["correct"]:
                        moved[p["category"], "+" if p["correct"] else "-"] += 1
                net = sum(p["correct"] for p in probes.values()) - sum(p["correct"] for p in base.values())
                cells = " ".join(f"{c[:5]} +{moved[c, '+']}/-{moved[c, '-']}" for c in CATEGORIES)
                print(f"{folder.rstrip('/').split('/')[-1]:8} {job:18} {version:3} net {net:+3d}  {cells}")


if __name__ == "__main__":
    main(sys.argv[1:])
