"""Task-agnostic evaluation on the task's held-out problems.

    accuracy    = mean_p score(p, greedy completion of p)           (exact match on addition)
    mean_reward = mean over `samples` sampled completions per problem at temperature T of the
                  reward being optimised
`score` is the task's own scorer (`task.eval_reward`) when training optimises something else,
e.g. a learned reward model (RLHF, `--reward model:PATH`); otherwise the training reward.
"""

from __future__ import annotations

from reference_impls.core.sampling import sample


def _budget(task, problems, max_new_tokens):
    if max_new_tokens:
        return max_new_tokens
    lens = [len(p.solution or "") for p in problems if getattr(p, "solution", None) is not None]
    return max(getattr(task, "max_new_tokens", 16), max(lens, default=0) + 2)


def accuracy(model, tok, task, problems, max_new_tokens: int | None = None,
             batch_size: int = 256) -> float:
    """Greedy decoding, mean task reward, in [0, 1] for 0/1 rewards."""
    n = _budget(task, problems, max_new_tokens)
    score = getattr(task, "eval_reward", None) or task.reward
    total = 0.0
    for i in range(0, len(problems), batch_size):
        chunk = problems[i : i + batch_size]
        ro = sample(model, tok, [p.prompt for p in chunk], n, greedy=True)
        total += sum(score(p, c) for p, c in zip(chunk, ro.completions, strict=True))
    return total / max(1, len(problems))


def mean_reward(model, tok, task, problems, samples: int = 4, temperature: float = 1.0,
                max_new_tokens: int | None = None) -> float:
    """Mean reward of `samples` sampled completions per problem (uses the torch RNG)."""
    group = [p for p in problems for _ in range(samples)]
    ro = sample(model, tok, [p.prompt for p in group], _budget(task, problems, max_new_tokens), temperature)
    return sum(task.reward(p, c) for p, c in zip(group, ro.completions, strict=True)) / max(1, len(group))
