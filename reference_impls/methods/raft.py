"""RAFT, Reward rAnked FineTuning (Dong et al., arXiv 2304.06767): at each stage, sample K
responses for each of b prompts from the current model, keep the one with the highest reward, and
fine-tune on the kept set; repeat from the fine-tuned model.

    y*(x) = argmax_{y in {y_1..y_K} ~ pi_theta(. | x)} r(x, y)
    L = - E_x (1/|y*|) log pi_theta(y*(x) | x)           (token mean, sft.sft_loss), iterated

This is the paper's (and official LMFlow RaftAligner's) "local ranking": the best of K per prompt,
kept whatever its reward (LMFlow: np.argmax, so the first of tied best; ties are common with 0/1
rewards, and with 0/1 rewards a prompt whose K samples all fail still contributes one). The model
is NOT reset between stages. K = 8 is the official code's default (`K=8` in
_get_batch_dataset_local) and ours; b = 64 prompts, temperature 1, 10 optimizer steps of 64 rows
per stage and lr 1e-3 are ours for the tiny preset.
"""

from __future__ import annotations

from dataclasses import dataclass

from reference_impls.core.selftrain import SelfTrainAlgo, SelfTrainConfig

NEEDS = {"verifiable_reward"}  # the paper's reward model; here the task's reward
STARTS_FROM_BASE = True


@dataclass
class Config(SelfTrainConfig):
    prompts_per_iteration: int = 64  # b prompts per stage
    samples_per_prompt: int = 8  # K responses per prompt (official code: 8)
    iteration_steps: int = 10  # optimizer steps per stage


def raft_select(problems, samples) -> list[tuple[str, str, float]]:
    """samples: [n][K] (completion, reward) -> per prompt (prompt, best completion, its reward);
    the first of tied best, as np.argmax."""
    kept = []
    for p, outs in zip(problems, samples, strict=True):
        best = max(range(len(outs)), key=lambda j: (outs[j][1], -j))  # argmax, first on ties
        kept.append((p.prompt, outs[best][0], outs[best][1]))
    return kept


class Algo(SelfTrainAlgo):
    def build(self, iteration, rng):
        problems = self.task.prompts(self.cfg.prompts_per_iteration, rng)
        scored = self.sample_and_score(problems)
        best = raft_select(problems, scored)
        return [(x, y) for x, y, _ in best], {
            "reward": sum(r for outs in scored for _, r in outs) / max(1, sum(map(len, scored))),
            "kept_reward": sum(r for *_, r in best) / max(1, len(best))}
