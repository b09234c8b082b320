"""One line per round of every job under a `bench lifelong --out` folder: python show.py OUT_DIR"""

import glob
import json
import sys

for d in sorted(glob.glob(sys.argv[1] + "/cache/*/*/rounds")):
    for f in sorted(glob.glob(d + "/r*.json"), key=lambda p: int(p.split("/r")[-1][:-5])):
        r = json.load(open(f))
        print(
            d.split("/")[-2], r["round"], r["promoted"],
            f"gen {r['general'] * 100:.1f} d {r['direct_mc'] * 100:.0f} i {r['indirect_mc'] * 100:.0f}",
            f"same {r['same_gen'] * 100:.0f} para {r['para_gen'] * 100:.0f} steps {r['steps']}",
            f"train {r['train_s']:.0f} gate {r['gate_s']:.0f} | {r['reason']}",
        )  # fmt: skip
