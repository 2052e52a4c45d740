"""The DeepSeek-R1 recipe (DeepSeek-AI, arXiv 2501.12948) as a pipeline of existing stages:

    1. sft   cold start: SFT on a small set of long, readable solutions      (methods/sft.py)
    2. grpo  reasoning-oriented RL with rule-based rewards                   (methods/grpo.py)
    3. rft   rejection-sampling SFT on the RL model's own correct outputs    (methods/rft.py)
    4. grpo  a final RL stage over all scenarios                             (methods/grpo.py)

Where the paper differs from this sketch: R1 rewards stage 2 with accuracy *and* format (a
language-consistency term too), collects ~600k reasoning + ~200k non-reasoning samples in stage 3
and fine-tunes the *base* model on them, and uses reward models for helpfulness/harmlessness in
stage 4. Here every stage uses the task's reward (`--reward`, e.g. a `module:function` that adds
a format term), and stage 3 continues from the RL model. Use `--task-option cot=true` on
addition for "long" solutions, and set a stage with `--set 2.lr=1e-4` (stage positions count the
pipeline's own stages, 1-4) since grpo appears twice.
"""

PIPELINE = ["sft", "grpo", "rft", "grpo"]
