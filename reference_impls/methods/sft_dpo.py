"""SFT -> DPO, the two-stage recipe of Zephyr (Tunstall et al., "Zephyr: Direct Distillation of LM
Alignment", arXiv 2310.16944): supervised fine-tuning on demonstrations (distilled SFT), then DPO on
preference pairs, with DPO's frozen reference = its starting point = the SFT model.

This module is only the pipeline: the runner expands `sft-dpo` into the stages below, each with its
own Config (`--set sft.steps=...`, `--set dpo.beta=...`), and starts each stage from the previous
stage's final policy; DPO's Algo copies its starting policy as the reference. Because the first
stage is SFT (STARTS_FROM_BASE = False), no warm-start stage is put first: SFT trains the raw model.
Zephyr's own values (beta = 0.1 for DPO) are DPO's default here; steps and lr are each stage's.
"""

PIPELINE = ["sft", "dpo"]
