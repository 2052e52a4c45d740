"""GKD, Generalized Knowledge Distillation: on-policy distillation (Agarwal et al., "On-Policy
Distillation of Language Models: Learning from Self-Generated Mistakes", arXiv 2306.13649).

The student pi_theta learns the teacher's next-token distributions p_T, token by token, on
sequences that are, with probability lambda, the student's own samples (on-policy) and otherwise
the task's demonstrations (supervised KD). The divergence is the generalized Jensen-Shannon
divergence of the paper's eq. (1), per completion token t of a sequence y:
    M = beta p_T + (1 - beta) p_S,     p_S = pi_theta(. | x, y_<t),  p_T = teacher(. | x, y_<t)
    JSD_beta(p_T || p_S) = beta KL(p_T || M) + (1 - beta) KL(p_S || M)
    beta = 0: KL(p_T || p_S) (forward KL, supervised KD)      beta = 1: KL(p_S || p_T) (reverse KL)
    L = 1/sum_i |y_i| sum_{i,t} JSD_beta   (a token mean over the global batch)
No gradient flows through the sampling (the paper's choice, as TRL). The teacher is "a stronger
model of the same preset": on the tiny preset, the task's warm-start SFT base trained
`teacher_steps` steps (twice the student's base recipe by default; cached like every base), or
any model with the student's vocabulary (`teacher`: a path or hub id).
Checked against TRL 1.16 `trl.experimental.gkd.GKDTrainer.generalized_jsd_loss` (values and
gradients, beta 0 / 0.5 / 1). As TRL, whether a step is on-policy is drawn once per step
(here from the step's RNG: resumable, and the same on every rank). Defaults lambda = 0.5,
beta = 0.5, sampling temperature 0.9 are TRL GKDConfig's; the loss is scored at temperature 1 (TRL's
compute_loss). teacher_steps = 800, lr 3e-4, 32 sequences per step are ours. `logit_chunk`
is not used: the loss needs whole distributions.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from reference_impls.core import distributed as dist
from reference_impls.core.logprobs import position_ids
from reference_impls.core.sampling import prompt_completion_batch, sample
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"demonstrations"}  # prompts, and their solutions for the off-policy share (tasks/base.py)
STARTS_FROM_BASE = True


@dataclass
class Config(TrainConfig):
    steps: int = 100  # optimizer steps
    batch_size: int = 32  # sequences per step
    lr: float = 3e-4  # peak learning rate (ours, tiny preset)
    lmbda: float = 0.5  # probability that a step trains on the student's own samples (TRL: 0.5)
    beta: float = 0.5  # generalized JSD interpolation: 0 forward KL, 1 reverse KL (TRL: 0.5)
    temperature: float = 0.9  # student sampling temperature (TRL: 0.9)
    top_p: float = 1.0  # nucleus sampling
    max_new_tokens: int = 6  # completion budget (the runner sets the task's)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)
    teacher: str = ""  # teacher model path or hub id; "": the preset's warm-start base, teacher_steps long
    teacher_steps: int = 800  # SFT steps of that teacher (the student's base: 400)
    teacher_seed: int = 0  # seed of that teacher's training


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5) -> Tensor:
    """JSD_beta(p_T || p_S) per position, summed over the vocabulary.   [B, T, V] x2 -> [B, T]"""
    log_s = F.log_softmax(student_logits.float(), -1)
    log_t = F.log_softmax(teacher_logits.float(), -1)
    if beta == 0:
        return (log_t.exp() * (log_t - log_s)).sum(-1)  # KL(p_T || p_S)
    if beta == 1:
        return (log_s.exp() * (log_s - log_t)).sum(-1)  # KL(p_S || p_T)
    b = torch.tensor(beta, dtype=log_s.dtype, device=log_s.device)
    log_m = torch.logsumexp(torch.stack([log_s + torch.log1p(-b), log_t + torch.log(b)]), 0)  # log M
    kl_t = (log_t.exp() * (log_t - log_m)).sum(-1)  # KL(p_T || M)
    kl_s = (log_s.exp() * (log_s - log_m)).sum(-1)  # KL(p_S || M)
    return beta * kl_t + (1 - beta) * kl_s


def gkd_loss(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, beta: float = 0.5, *,
             total_tokens: Tensor | float | None = None) -> Tensor:
    """sum_{i,t} JSD_beta m / sum m.   logits [B, T, V] (position t predicts token t+1), mask [B, T]"""
    m = mask.float()
    return (generalized_jsd(student_logits, teacher_logits, beta) * m).sum() / (
        m.sum() if total_tokens is None else total_tokens)


def _say(msg: str) -> None:
    import sys

    msg = msg.replace("--no-warm skips it, --warm-steps N shortens it.", "--set teacher_steps=N shortens it.")
    print(f"gkd teacher: {msg}", file=sys.stderr, flush=True)


def load_teacher(cfg: Config, task, tok, device):
    """The teacher model (frozen) and a check that it shares the student's vocabulary."""
    from reference_impls.core.model import char_tokenizer, extra_chars, load_model
    from reference_impls.tasks.base import MissingSignal
    from reference_impls.tasks.base_model import RECIPE, warm_start

    path = cfg.teacher
    if not path and tok.get_vocab() != char_tokenizer(extra_chars(task.alphabet())).get_vocab():
        raise MissingSignal("gkd: the default teacher is the tiny preset's longer-trained base, and this "
                            "student has another vocabulary; give a teacher with the student's tokenizer: "
                            "--set teacher=PATH_OR_HUB_ID")
    if not path:  # the tiny preset's base, trained longer; cached under a key of the task's data
        demos = task.demonstrations(64, step_rng(0, 0))
        key = f"{task.name}-teacher-{hashlib.sha256(repr(demos).encode()).hexdigest()[:12]}"
        recipe = dataclasses.replace(RECIPE, steps=cfg.teacher_steps)
        if not dist.is_main():
            dist.barrier()  # rank 0 trains (or finds) it first
        with dist.local():
            path = str(warm_start(task, "tiny", cfg.teacher_seed, recipe, key=key, say=_say))
        if dist.is_main():
            dist.barrier()
    teacher, t_tok = load_model(path, device, chars=task.alphabet())
    if t_tok.get_vocab() != tok.get_vocab():
        raise MissingSignal(f"gkd: the teacher {path!r} has another vocabulary than the student "
                         "(distillation compares next-token distributions: give a teacher with the same tokenizer)")
    return teacher.eval().requires_grad_(False)


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.module, self.tok, self.task, self.cfg, self.seed = model, tok, task, cfg, seed
        self.teacher = load_teacher(cfg, task, tok, next(model.parameters()).device)

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c, rng = self.cfg, step_rng(self.seed, step)
        on_policy = rng.random() < c.lmbda  # drawn first: the same on every rank
        demos = self.task.demonstrations(c.batch_size, rng)
        device = next(self.module.parameters()).device
        if on_policy:  # the student's own completions of the prompts
            ro = sample(self.module, self.tok, [p for p, _ in demos], c.max_new_tokens, c.temperature,
                        c.top_p, cache_implementation=c.sampler_cache)
            batch = {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask, "mask": ro.mask}
        else:  # supervised KD on the demonstrations (+ EOS)
            batch = prompt_completion_batch(self.tok, [p for p, _ in demos], [s for _, s in demos], device)
        return batch, {"on_policy": float(on_policy)}

    def _logits(self, model, b: Batch) -> Tensor:
        am = b["attention_mask"]
        return model(input_ids=b["input_ids"], attention_mask=am, position_ids=position_ids(am)).logits[:, :-1]

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        s_logits = self._logits(self.module, micro)  # [n, T-1, V]
        with torch.no_grad():
            t_logits = self._logits(self.teacher, micro)
        log_s = F.log_softmax(s_logits.detach().float(), -1)
        micro["_entropy"] = -(log_s.exp() * log_s).sum(-1)  # H(p_S) per token: the entropy diagnostic
        loss = gkd_loss(s_logits, t_logits, micro["mask"], self.cfg.beta, total_tokens=totals["tokens"])
        return loss, {}
