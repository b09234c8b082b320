"""python bench/results/lifelong/records/drift.py ADAPTER...: per candidate adapter, the whole general suite (greedy)
with the replies flipped against the base's, the mean KL(base || candidate) per token on the base's own replies to the
first 120 probes, and greedy answers to the first four facts' questions. One JSON line each. (A diagnostic kept beside
the records it produced; the base's replies are cached in $DRIFT_CACHE, default /tmp/base305.json.)"""

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from learner.chat import encode_chat
from learner.evaluate import EvalConfig, load_version, score_probes
from learner.model_files import BUILTIN, default_cache_dir, resolve_model
from learner.probes import load_general_suite

torch.set_num_threads(int(os.environ.get("T", "2")))
BASE = resolve_model(BUILTIN, default_cache_dir())
specs = load_general_suite()
cfg = EvalConfig(batch_size=48)
cache = os.environ.get("DRIFT_CACHE", "/tmp/base305.json")
QS = [
    ("What is the capital of Veltoria?", "Quellmar"),
    ("Who painted The Lantern Orchard?", "Corvelle"),
    ("In what year was the Treaty of Wendragh signed?", "1687"),
    ("Which river flows through the city of Fendrowick?", "Ulvenne"),
]
if not os.path.exists(cache):
    m, tok = load_version(BASE, None, device="cpu")
    rep = score_probes(m, tok, specs, cfg)
    json.dump(
        {
            "score": rep.skills["general"].score,
            "probes": [[p.reply, p.correct] for p in rep.probes],
            "ids": [p.external_id for p in rep.probes],
        },
        open(cache, "w"),
    )
base = json.load(open(cache))
bm, tok = load_version(BASE, None, device="cpu")
for ad in sys.argv[1:]:
    m, _ = load_version(BASE, ad, device="cpu")
    rep = score_probes(m, tok, specs, cfg)
    byid = {p.external_id: p for p in rep.probes}
    gain = loss = 0
    kls = []
    for eid, (_reply, ok) in zip(base["ids"], base["probes"], strict=True):
        c = byid[eid].correct
        gain += c and not ok
        loss += ok and not c
    # KL on base greedy replies of generated probes (teacher forced), first 120 probes
    for sp, (reply, _ok) in list(zip(specs, base["probes"], strict=True))[:120]:
        if sp.grader == "choice" or not reply:
            continue
        p = encode_chat(tok, sp.messages)
        r = tok(reply, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + r])
        with torch.no_grad():
            a = torch.log_softmax(bm(ids).logits[0, len(p) - 1 : -1], -1)
            b = torch.log_softmax(m(ids).logits[0, len(p) - 1 : -1], -1)
        kls.append(float((a.exp() * (a - b)).sum(-1).mean()))
    gens = []
    for q, _k in QS:
        ids = torch.tensor([encode_chat(tok, [{"role": "user", "content": q}])])
        with torch.no_grad():
            o = m.generate(ids, max_new_tokens=30, do_sample=False)
        gens.append(tok.decode(o[0, ids.shape[1] :], skip_special_tokens=True))
    hits = sum(k.lower() in g.lower() for (_q, k), g in zip(QS, gens, strict=True))
    print(
        json.dumps(
            {
                "adapter": ad[-60:],
                "general": round(rep.skills["general"].score * 100, 1),
                "base": round(base["score"] * 100, 1),
                "gain": gain,
                "loss": loss,
                "kl": round(sum(kls) / len(kls), 4),
                "gen_hits": hits,
                "gens": gens,
            }
        ),
        flush=True,
    )
