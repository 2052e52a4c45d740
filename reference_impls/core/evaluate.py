"""Task-agnostic evaluation on the task's held-out problems.

    accuracy    = mean_p score(p, greedy completion of p)           (exact match on addition)
    mean_reward = mean over `samples` sampled completions per problem at temperature T of the
                  reward being optimised
`score` is the task's own scorer (`task.eval_reward`) when training optimises something else,
e.g. a learned reward model (RLHF, `--reward model:PATH`); otherwise the training reward.
"""

from __future__ import annotations

import math

import torch

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


# ------------------------------------------------------------------ sampled metrics (findings)
#   pass@k     unbiased estimator (Chen et al. 2021, arXiv 2107.03374, eq. 1) from n >= k samples
#   kl_base    forward KL(pi_base || pi) on ID prompts, exact per token over base samples
#   entropy    mean per-token entropy of pi on its own samples;  length: mean completion tokens
# All use the task's scorer (`eval_reward` if set, else `reward`), never a learned training reward.

PASS_K = (1, 4, 16)  # the default list of k recorded in every Run (n = max k samples per prompt)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct:  1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def parse_ks(spec: str | list[int] | tuple[int, ...] | None) -> tuple[int, ...]:
    """'1,8,64' -> (1, 8, 64); None -> PASS_K. Raises ValueError naming the bad value."""
    if spec is None:
        return PASS_K
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        ks = tuple(sorted({int(str(x).strip()) for x in items if str(x).strip()}))
    except ValueError:
        raise ValueError(f"--pass-k {spec!r}: expected comma-separated positive integers, e.g. 1,8,64") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"--pass-k {spec!r}: expected comma-separated positive integers, e.g. 1,8,64")
    return ks


def mean_pass_at_k(correct: list[bool], n: int, ks) -> dict[str, float]:
    """`correct` holds n verdicts per problem, problem after problem -> {"pass@k": mean over problems}."""
    per = [sum(correct[i : i + n]) for i in range(0, len(correct), n)]
    return {f"pass@{k}": sum(pass_at_k(n, c, k) for c in per) / max(1, len(per)) for k in ks}


def token_kl(logp_base: torch.Tensor, logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum over masked positions of KL(p_base || p) = sum_v p_base(v) (log p_base(v) - log p(v)).
    logp_base, logp [B, T, V] log-probabilities; mask [B, T] -> a scalar."""
    return ((logp_base.exp() * (logp_base - logp)).sum(-1) * mask).sum()


def token_entropy_sum(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum over masked positions of H = -sum_v p(v) log p(v).   logp [B, T, V], mask [B, T] -> scalar."""
    return (-(logp.exp() * logp).sum(-1) * mask).sum()


def _chunks(xs: list, size: int):
    for i in range(0, len(xs), size):
        yield xs[i : i + size]


@torch.no_grad()
def _score(model, ro) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax of `model` at every completion position of a rollout: ([B, T-1, V], mask [B, T-1])."""
    from reference_impls.core.logprobs import position_ids

    out = model(input_ids=ro.input_ids, attention_mask=ro.attention_mask,
                position_ids=position_ids(ro.attention_mask))
    return torch.log_softmax(out.logits[:, :-1].float(), -1), ro.mask


@torch.no_grad()
def sampled_metrics(model, tok, task, problems, ks=PASS_K, temperature: float = 1.0,
                    max_new_tokens: int | None = None, batch_size: int = 2048, by=None,
                    entropy: bool = True) -> dict[str, float]:
    """n = max(ks) samples per problem at temperature T:  pass@k for each k (mean over problems),
    entropy (nats per completion token, of softmax(z), EOS included) and length (completion
    tokens, EOS included) of the samples. `by(problem)` (optional) names a group: pass@k of each
    group too, as "<group> pass@k", from the same samples. `entropy=False` skips the entropy (a
    second forward pass over the samples)."""
    n, budget = max(ks), _budget(task, problems, max_new_tokens)
    score = getattr(task, "eval_reward", None) or task.reward
    was = model.training
    model.eval()
    correct, ent, toks = [], 0.0, 0.0
    group = [p for p in problems for _ in range(n)]
    for chunk in _chunks(group, batch_size):
        ro = sample(model, tok, [p.prompt for p in chunk], budget, temperature)
        correct += [score(p, c) > 0.5 for p, c in zip(chunk, ro.completions, strict=True)]
        toks += float(ro.mask.sum())
        if entropy:  # one more forward pass over the samples
            logp, mask = _score(model, ro)
            if temperature != 1.0:  # the distribution sampled from: softmax(z / T)
                logp = torch.log_softmax(logp / temperature, -1)
            ent += float(token_entropy_sum(logp, mask))
    model.train(was)
    out = {**mean_pass_at_k(correct, n, ks), "length": toks / max(1, len(group)),
           **({"entropy": ent / max(toks, 1.0)} if entropy else {})}
    for g in dict.fromkeys(by(p) for p in problems) if by else ():
        rows = [c for i, p in enumerate(problems) if by(p) == g for c in correct[i * n : (i + 1) * n]]
        out.update({f"{g} {k}": v for k, v in mean_pass_at_k(rows, n, ks).items()})
    return out


@torch.no_grad()
def kl_to_base(model, base, tok, task, problems, samples: int = 4, max_new_tokens: int | None = None,
               batch_size: int = 2048) -> float:
    """Forward KL(pi_base || pi) per prompt (nats), on `samples` completions per problem drawn from
    the base at T = 1. Exact per token over the base's samples (Rao-Blackwellised):
        KL = E_{y ~ pi_base} sum_t sum_v pi_base(v | x, y_<t) [log pi_base(v | .) - log pi(v | .)],
    which equals the sequence-level KL in expectation (chain rule) with less variance than the
    Monte-Carlo log-ratio log pi_base(y) - log pi(y). Both models must share the tokenizer."""
    budget = _budget(task, problems, max_new_tokens)
    was, was_b = model.training, base.training
    model.eval()
    base.eval()
    total, group = 0.0, [p for p in problems for _ in range(samples)]
    for chunk in _chunks(group, batch_size):
        ro = sample(base, tok, [p.prompt for p in chunk], budget, 1.0)
        lb, mask = _score(base, ro)
        lp, _ = _score(model, ro)
        total += float(token_kl(lb, lp, mask))
    model.train(was)
    base.train(was_b)
    return total / max(1, len(group))


def sampled_results(policy, tok, task, run_id: str, note: str, ks=PASS_K, base=None,
                    max_problems: int = 200, kl_samples: int = 4) -> list:
    """The Run's sampled metrics as Results: pass@k (%), entropy and length on each split; forward
    KL(pi_base || pi) on the ID split when a `base` model is given. At most `max_problems` problems
    per split (the first ones), n = max(ks) samples each at T = 1."""
    from taxonomy.schema import Origin, Result, Split

    out = []
    for split in (Split.in_distribution, Split.out_of_distribution):
        probs = (task.eval_sets.get(split.value) or [])[:max_problems]
        if not probs:
            continue
        m = sampled_metrics(policy, tok, task, probs, ks)
        how = f"{note}; {len(probs)} problems x {max(ks)} samples at T=1, task scorer"
        for key, v in m.items():
            pct = key.startswith("pass@")
            out.append(Result(benchmark=f"{task.name}-{split.value}", metric=key, value=100 * v if pct else v,
                              unit="%" if pct else "", split=split, model=run_id, origin=Origin.measured,
                              note=how + ("; unbiased estimator (Chen et al. 2021)" if pct else
                                          "; nats/token" if key == "entropy" else "; tokens, EOS included")))
        if base is not None and split is Split.in_distribution:
            kl = kl_to_base(policy, base, tok, task, probs, kl_samples)
            out.append(Result(benchmark=f"{task.name}-{split.value}", metric="kl_to_base", value=kl, unit="",
                              split=split, model=run_id, origin=Origin.measured,
                              note=f"{note}; forward KL(base || policy), nats per prompt, exact per token over "
                                   f"{kl_samples} base samples x {len(probs)} problems"))
    return out
