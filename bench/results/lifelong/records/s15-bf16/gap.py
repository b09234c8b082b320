"""PYTHONPATH=<tree> python gap.py MODEL_DIR PARENT_ADAPTER: KL per token between the teacher logits a round's loss
took as targets (returned by sampling from the rollout copy) and the student's own pass at step 0 (the same version),
on 8 anchor prompts, with and without bf16 autocast, for round 1 (no parent) and a continuing round. Output: gap.txt.
(Run at cff00ac; since 67506e6 sampling under autocast returns no logits, so this script needs that older tree.)"""

import sys
import time

import torch

from learner.config import LearnerConfig
from learner.sdft import loss_mask, sample, stack_rows
from learner.session import STUDENT, completion_logits, open_session
from learner.training import anchor_batches

torch.set_num_threads(1)
model_dir, parent = sys.argv[1], sys.argv[2]
for autocast in (False, True):
    for par in (None, parent):
        cfg = LearnerConfig.preset("builtin", lora_r=8, lora_alpha=16, autocast=autocast, threads=1)
        t = time.time()
        s = open_session(model_dir, cfg, parent_adapter=par)
        prompts = next(anchor_batches(s.tokenizer, cfg, 1)) + next(anchor_batches(s.tokenizer, cfg.replace(seed=1), 1))
        torch.manual_seed(0)
        comps, rows = sample(s, prompts, source="teacher", budget=48)
        width = max(len(c) for c in comps)
        with torch.no_grad(), s.adapter(STUDENT), s.forward_context():
            stu = completion_logits(s, [p.student_ids for p in prompts], comps)
        mask = loss_mask([len(c) for c in comps], width, 0).bool()
        t_lp = stack_rows(rows, width).float().log_softmax(-1)[mask]
        s_lp = stu.float().log_softmax(-1)[mask]
        kl = (t_lp.exp() * (t_lp - s_lp)).sum(-1)
        differ = float((t_lp.argmax(-1) != s_lp.argmax(-1)).float().mean())
        print(
            f"autocast={autocast} parent={'v1' if par else 'none'} tokens={int(mask.sum())} KL/token "
            f"mean={kl.mean():.2e} max={kl.max():.2e} max|dlogp|={(t_lp - s_lp).abs().max():.2e} "
            f"argmax differ={differ:.3f} ({time.time() - t:.0f}s)",
            flush=True,
        )
