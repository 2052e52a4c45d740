"""RFT, Rejection sampling Fine-Tuning (Yuan et al., "Scaling Relationship on Learning
Mathematical Reasoning with Large Language Models", arXiv 2308.01825): sample k reasoning paths per
training question from the SFT model, keep the correct ones whose reasoning path is distinct, and
fine-tune on them together with the original SFT data:

    D_RFT = {(q_i, r_ij) : r_ij ~ pi_SFT(. | q_i), j <= k, correct(r_ij), r_ij distinct for q_i}
    L = - E_{(q, r) ~ D u D_RFT} (1/|r|) log pi_theta(r | q)        (token mean, sft.sft_loss)

Distinct: the paper tells paths apart by their list of equations; a task-agnostic stand-in here is
the completion text with whitespace collapsed (on chain-of-thought addition the lines ARE the
equations). The demonstration of each question (D) counts as already seen, so a sample equal to it
is not added twice. One generation, at step 0, from the start (SFT) model: the dataset is fixed
for the whole run (iteration_steps 0). The paper fine-tunes the pre-trained model on D u D_RFT;
the runner hands us the SFT model, so we fine-tune that (no reset). Paper defaults: k = 100
samples at temperature 0.7; ours for the tiny preset: k = 8, temperature 0.7, 256 questions, lr 1e-3.
"""

from __future__ import annotations

from dataclasses import dataclass

from reference_impls.core.selftrain import SelfTrainAlgo, SelfTrainConfig

NEEDS = {"verifiable_reward", "demonstrations"}  # D u D_RFT: the SFT data is part of the set
STARTS_FROM_BASE = True


@dataclass
class Config(SelfTrainConfig):
    prompts_per_iteration: int = 256  # training questions (one generation for the whole run)
    samples_per_prompt: int = 8  # k reasoning paths sampled per question (paper: 100)
    temperature: float = 0.7  # sampling temperature (paper: 0.7)
    iteration_steps: int = 0  # 0: generate once, at step 0 (RFT is not iterated)
    dedup: bool = True  # keep only distinct correct paths per question (paper)
    with_demonstrations: bool = True  # train on D u D_RFT (paper); False: D_RFT only


def path_key(completion: str) -> str:
    """What makes two reasoning paths the same: the text up to whitespace."""
    return " ".join(completion.split())


def rft_select(problems, samples, success: float = 1.0, dedup: bool = True,
               with_demonstrations: bool = True) -> list[tuple[str, str]]:
    """samples: [n][k] (completion, reward) -> kept (prompt, completion): each question's
    demonstration (if asked) then its correct samples, distinct ones only when `dedup`."""
    kept = []
    for p, outs in zip(problems, samples, strict=True):
        seen = set()
        if with_demonstrations:
            kept.append((p.prompt, p.solution))
            seen.add(path_key(p.solution))
        for y, r in outs:
            if r >= success and not (dedup and path_key(y) in seen):
                kept.append((p.prompt, y))
                seen.add(path_key(y))
    return kept


class Algo(SelfTrainAlgo):
    def build(self, iteration, rng):
        c = self.cfg
        problems = self.task.prompts(c.prompts_per_iteration, rng)
        scored = self.sample_and_score(problems)
        kept = rft_select(problems, scored, c.success, c.dedup, c.with_demonstrations)
        n_correct = sum(r >= c.success for outs in scored for _, r in outs)
        return kept, {"reward": n_correct / max(1, sum(map(len, scored))),
                      "kept_samples": float(len(kept) - (len(problems) if c.with_demonstrations else 0))}
