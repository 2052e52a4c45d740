"""The "base model" recipe: a short warm-start SFT so that RL methods start with non-zero reward.

Recipe (tiny preset, addition): SFT on in-distribution demonstrations, batch 64, lr 3e-3, 20
warmup steps, 400 steps (~10 s on 2 CPU cores), seed 0 -> about 50-60 % greedy exact match on the
ID split (0 % OOD). The result is saved HF-style under $SFTRL_CACHE (default ~/.cache/sftrl)
/base/<task>-<model>-<hash of the recipe>, so it is trained once per machine and recipe;
warm_start.json there records the recipe and the measured exact match. The transition is sharp
(~5 % at 200 steps, ~60-80 % at 400, ~95 % at 700 for seeds 0 and 1), so the exact figure depends
on the seed and on floating-point details (thread count, hardware).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from reference_impls.core.model import cache_dir, config_key, load_model
from reference_impls.core.train import seed_everything, train
from reference_impls.methods import sft
from reference_impls.tasks.addition import TASKS, exact_match

# fused=False: the per-parameter AdamW this recipe (and its measured exact match) was fixed with.
# Round-off moves the sharp transition: the fused optimizer gives ~84 % instead of ~62 % (seed 0),
# a base on which 60 DPO steps lose more policy preference accuracy than tests/test_ref_learning allows.
RECIPE = sft.Config(steps=400, batch_size=64, lr=3e-3, warmup_steps=20, fused=False)


def warm_start(task: str = "addition", model: str = "tiny", seed: int = 0,
               recipe: sft.Config = RECIPE) -> Path:
    """Path of the warm-started base (trained on first use, then cached)."""
    key = config_key({"task": task, "model": model, "seed": seed, **asdict(recipe)})
    path = cache_dir() / "base" / f"{task}-{Path(model).name}-{key}"
    if (path / "config.json").exists():
        return path
    seed_everything(seed)
    policy, tok = load_model(model)
    task_obj = TASKS[task]()
    train(sft.Algo(policy, tok, task_obj, recipe, seed=seed), recipe, progress=False)
    em = exact_match(policy, tok, task_obj.eval_sets["in_distribution"])
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    policy.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    info = {"task": task, "model": model, "seed": seed, "recipe": asdict(recipe),
            "exact_match_in_distribution": em}
    (tmp / "warm_start.json").write_text(json.dumps(info, indent=2))
    if path.exists():
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, path)
    return path
