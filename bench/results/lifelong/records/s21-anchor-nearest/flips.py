"""A round's candidate against the version before it (or a named one) on the 305 general probes, by category.

python flips.py JOB_FOLDER ROUND [VERSION]     # JOB_FOLDER: a bench lifelong job folder holding rounds/r<k>.db
"""

import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path

job, number = Path(sys.argv[1]), int(sys.argv[2])
record = json.loads((job / "rounds" / f"r{number}.json").read_text())
db = sqlite3.connect(job / "rounds" / f"r{number}.db")
rows = db.execute("select version, details from eval_results where skill='general'")
probes = {version: json.loads(details)["probes"] for version, details in rows}
candidate = record["version"]
earlier = [v for v in sorted(probes, key=lambda v: int(v[1:])) if v != candidate]
print(sorted(probes), record["reason"])
pairs = list(zip(probes[sys.argv[3] if len(sys.argv) > 3 else earlier[-1]], probes[candidate], strict=True))
lost = [(x, y) for x, y in pairs if x["correct"] and not y["correct"]]
gained = [(x, y) for x, y in pairs if y["correct"] and not x["correct"]]
print("lost", dict(Counter(x["category"] for x, _ in lost)), "gained", dict(Counter(x["category"] for x, _ in gained)))
for x, y in lost:
    print(" ", x["category"][:5], repr(x["reply"][:60]), "->", repr(y["reply"][:70]))
