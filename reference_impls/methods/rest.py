"""ReST, Reinforced Self-Training (Gulcehre et al., arXiv 2308.08998): growing-batch RL as
alternating Grow and Improve steps.

    Grow:      D_g = {(x, y) : x ~ D, y ~ pi_theta(. | x)} u D      scored once: R(x, y)
    Improve_i: D_g <- {(x, y) in D_g : R(x, y) > tau_i},  tau_1 < tau_2 < ... < tau_I
               theta <- argmin - E_{(x,y) ~ D_g} (1/|y|) log pi_theta(y | x)   (BC loss, token mean)

Each Grow samples `samples_per_prompt` completions for `prompts_per_iteration` problems from the
current policy and adds the problems' demonstrations (the original D; the ReST-EM paper,
arXiv 2312.06585, lists this augmentation as a difference from ReST-EM); each Improve step
re-filters the SAME grown pool at the next, higher threshold (strict >, as the paper's filter) and
continues fine-tuning the current policy (no reset) for `iteration_steps` optimizer steps. After
the I-th Improve step the next Grow starts; the stage runs Grow/Improve cycles until `steps`.
Of the paper's offline-RL losses we implement BC (NLL on the filtered data), the one it found
best. The thresholds are for rewards in [0, 1] (the paper's learned metric); with a 0/1 reward
every tau in [0, 1) keeps exactly the correct samples. Defaults (thresholds 0.0/0.7/0.9, 64
prompts x 4 samples per Grow, 10 steps per Improve, lr 1e-3) are ours for the tiny preset.
"""

from __future__ import annotations

from dataclasses import dataclass

from reference_impls.core.selftrain import SelfTrainAlgo, SelfTrainConfig

NEEDS = {"verifiable_reward", "demonstrations"}  # R(x, y); the Grow set includes D
STARTS_FROM_BASE = True


@dataclass
class Config(SelfTrainConfig):
    steps: int = 60  # optimizer steps (all Grow/Improve cycles together)
    iteration_steps: int = 10  # optimizer steps per Improve step
    thresholds: tuple[float, ...] = (0.0, 0.7, 0.9)  # tau_1 < ... < tau_I: one Improve step each
    with_demonstrations: bool = True  # add the task's demonstrations to each Grow set (paper)


def rest_filter(pool: list[tuple[str, str, float]], tau: float) -> list[tuple[str, str]]:
    """Improve step's filter: the (prompt, completion) of the pool with reward > tau."""
    return [(x, y) for x, y, r in pool if r > tau]


def rest_phase(iteration: int, n_thresholds: int) -> tuple[int, int]:
    """(Grow index g, Improve index i) of an iteration: I Improve steps per Grow."""
    return divmod(iteration, n_thresholds)


class Algo(SelfTrainAlgo):
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        if list(cfg.thresholds) != sorted(cfg.thresholds) or not cfg.thresholds:
            raise ValueError(f"thresholds must be a non-empty rising list, got {cfg.thresholds}")
        super().__init__(model, tok, task, cfg, seed)

    def build(self, iteration, rng):
        c = self.cfg
        g, i = rest_phase(iteration, len(c.thresholds))
        stats = {}
        if i == 0:  # Grow: a new pool from the current policy (+ D), scored once
            problems = self.task.prompts(c.prompts_per_iteration, rng)
            scored = self.sample_and_score(problems)
            pool = [(p.prompt, y, r) for p, outs in zip(problems, scored, strict=True) for y, r in outs]
            stats["reward"] = sum(r for *_, r in pool) / max(1, len(pool))
            if c.with_demonstrations:
                pool += [(p.prompt, p.solution, float(self.task.reward(p, p.solution))) for p in problems]
            self.state["pool"] = [list(t) for t in pool]
        pool = [tuple(t) for t in self.state["pool"]]
        tau = c.thresholds[i]
        return rest_filter(pool, tau), {**stats, "grow": float(g), "threshold": tau}
