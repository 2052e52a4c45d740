"""ReST-EM (Singh, Co-Reyes, Agarwal et al., "Beyond Human Data: Scaling Self-Training for
Problem-Solving with Language Models", arXiv 2312.06585): expectation-maximisation for RL with a
binary reward. Iteration i:

    E-step (Generate): D_i = {(x_j, y_j) : x_j ~ D, y_j ~ p_{theta_{i-1}}(. | x_j)}, scored r(x, y) in {0, 1}
    M-step (Improve):  theta_i = argmax_theta E_{(x,y) ~ D_i} [ r(x, y) log p_theta(y | x) ]
                       fine-tuned from the BASE (start) model theta_0, not from theta_{i-1}

With a 0/1 reward the M-step is the NLL of the correct samples (here token mean, sft.sft_loss);
"correct" = reward >= `success`. Unlike ReST, no human demonstrations are added to D_i. Starting
each M-step from the base reloads the start weights in place; AdamW's moments carry over (see
core/selftrain.py) where the paper starts a fresh fine-tuning run. The paper caps how many correct
solutions of one problem are kept, so easy problems do not dominate: `max_per_prompt` (0: no cap;
its value in the paper is not reproduced here). Defaults (256 problems x 4 samples at T = 1 per
iteration, 10 M-step optimizer steps of 64 rows, lr 1e-3) are ours for the tiny preset.
"""

from __future__ import annotations

from dataclasses import dataclass

from reference_impls.core.selftrain import SelfTrainAlgo, SelfTrainConfig

NEEDS = {"verifiable_reward"}
STARTS_FROM_BASE = True


@dataclass
class Config(SelfTrainConfig):
    iteration_steps: int = 10  # M-step optimizer steps per EM iteration
    reset_each_iteration: bool = True  # each M-step fine-tunes the base model (paper)
    max_per_prompt: int = 0  # keep at most this many correct samples per problem (0: all)


def rest_em_select(problems, samples, success: float = 1.0, max_per_prompt: int = 0
                   ) -> list[tuple[str, str]]:
    """samples: [n][k] (completion, reward) -> the (prompt, completion) with reward >= success,
    the first `max_per_prompt` of each problem when capped."""
    kept = []
    for p, outs in zip(problems, samples, strict=True):
        good = [y for y, r in outs if r >= success]
        kept += [(p.prompt, y) for y in (good[:max_per_prompt] if max_per_prompt > 0 else good)]
    return kept


class Algo(SelfTrainAlgo):
    def build(self, iteration, rng):
        c = self.cfg
        problems = self.task.prompts(c.prompts_per_iteration, rng)
        scored = self.sample_and_score(problems)
        kept = rest_em_select(problems, scored, c.success, c.max_per_prompt)
        return kept, {"reward": sum(r for outs in scored for _, r in outs) / max(1, sum(map(len, scored)))}
