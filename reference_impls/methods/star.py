"""STaR, the Self-Taught Reasoner (Zelikman, Wu, Mu, Goodman, arXiv 2203.14465): bootstrap
rationales by fine-tuning on the model's own ones that reach the right answer. Iteration n
(Algorithm 1 of the paper), with M_{n-1} the current model and M the start model:

    (r_i, y_i)         ~ M_{n-1}(x_i)                         rationale generation
    (r^rat_i, y^rat_i) ~ M_{n-1}(add_hint(x_i, y*_i))         rationalisation, for the failures only
    D_n     = {(x_i, r_i, y_i)         : y_i = y*_i}
    D^rat_n = {(x_i, r^rat_i, y^rat_i) : y_i != y*_i and y^rat_i = y*_i}
    M_n     = train(M, D_n u D^rat_n)                         fine-tune from the START model
    L = - 1/N sum_{i,t} log M(z_{i,t} | x_i, z_{i,<t}),  z = (r, y)   (token mean, sft.sft_loss)

The hint is appended to the prompt only when sampling (`hint_template`, the hint = the problem's
`answer`, else its `solution`); the kept rationalisation is trained on the plain prompt x_i,
WITHOUT the hint, as in the paper. "Correct" = task reward >= `success`. With
`samples_per_prompt` > 1 every correct sample is kept and only problems with none are rationalised
(the paper draws one rationale per problem). Training from the start model each iteration reloads
its weights in place; AdamW's moments carry over (see core/selftrain.py) where the paper restarts
fine-tuning. The paper's schedule: 40 training steps in the first outer loop, 20 % more each loop
(iteration_growth 1.2, as ours); 10 first-iteration steps, lr, batch and prompts per iteration
are ours for the tiny preset. The paper's few-shot prompting of the generator is not modelled
(the start model is already an SFT model).
"""

from __future__ import annotations

from dataclasses import dataclass

from reference_impls.core.selftrain import SelfTrainAlgo, SelfTrainConfig

NEEDS = {"verifiable_reward", "expert_solutions"}  # the hint is the expert answer / solution
STARTS_FROM_BASE = True


@dataclass
class Config(SelfTrainConfig):
    steps: int = 60  # optimizer steps (all outer loops together)
    samples_per_prompt: int = 1  # rationales sampled per problem (paper: one)
    iteration_steps: int = 10  # optimizer steps of the first outer loop (paper: 40)
    iteration_growth: float = 1.2  # steps grow by this factor each outer loop (paper: +20 %)
    reset_each_iteration: bool = True  # fine-tune from the start model each outer loop (paper)
    rationalize: bool = True  # retry failures with the answer as a hint (paper); False: STaR w/o rationalisation
    hint_template: str = "{prompt}({hint})"  # the prompt the rationalisation samples from


def hint_of(problem) -> str:
    return problem.answer if problem.answer is not None else problem.solution


def star_select(problems, samples, hinted) -> tuple[list[tuple[str, str]], int, int]:
    """Algorithm 1's filter. samples / hinted: [n][k] (completion, correct?) drawn without / with
    the hint (hinted[i] is ignored unless problem i has no correct sample). Returns the kept
    (plain prompt, completion) and the counts (|D_n|, |D^rat_n|)."""
    kept, n_rat = [], 0
    for p, outs, hint_outs in zip(problems, samples, hinted, strict=True):
        good = [y for y, ok in outs if ok]
        if not good:
            good = [y for y, ok in hint_outs if ok][:1]  # rationalised: trained without the hint
            n_rat += len(good)
        kept += [(p.prompt, y) for y in good]
    return kept, len(kept) - n_rat, n_rat


class Algo(SelfTrainAlgo):
    def build(self, iteration, rng):
        c = self.cfg
        problems = self.task.prompts(c.prompts_per_iteration, rng)
        scored = self.sample_and_score(problems)
        samples = [[(y, r >= c.success) for y, r in outs] for outs in scored]
        failed = [i for i, outs in enumerate(samples) if not any(ok for _, ok in outs)]
        hinted: list[list[tuple[str, bool]]] = [[] for _ in problems]
        if c.rationalize and failed:
            fp = [problems[i] for i in failed]
            prompts = [c.hint_template.format(prompt=p.prompt, hint=hint_of(p)) for p in fp]
            for i, outs in zip(failed, self.sample_and_score(fp, 1, prompts), strict=True):
                hinted[i] = [(y, r >= c.success) for y, r in outs]
        kept, n_gen, n_rat = star_select(problems, samples, hinted)
        reward = sum(r for outs in scored for _, r in outs) / max(1, sum(map(len, scored)))
        return kept, {"reward": reward, "kept_generated": float(n_gen), "kept_rationalized": float(n_rat)}
