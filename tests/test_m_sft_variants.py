"""SFT variants: DFT, iw-SFT, GEM, Token Cleaning, OTR, LIMA, FisherSFT.

Value checks: DFT against TRL 1.16 `SFTTrainer(loss_type="dft")` (value and full gradient, float32
round-off tolerances as tests/test_parity_trl.py); the others against numbers worked out by hand
from each paper's equation (the arithmetic is written beside each check, tolerance 1e-5).
Learning tests (slow): from the warm-started tiny base on addition, 60 steps must raise greedy exact
match on the ID split above a threshold that the same method with its loss sign flipped misses.
"""

from __future__ import annotations

import importlib
import itertools
import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from datasets import Dataset, disable_progress_bars  # noqa: E402
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

import reference_impls.testing  # noqa: E402, F401  (HF offline, 1 torch thread)
from reference_impls import runner  # noqa: E402
from reference_impls.core.evaluate import accuracy  # noqa: E402
from reference_impls.core.logprobs import token_logprobs  # noqa: E402
from reference_impls.core.model import load_model  # noqa: E402
from reference_impls.core.selection import char_ngram_features  # noqa: E402
from reference_impls.core.train import seed_everything, train  # noqa: E402
from reference_impls.methods.dft import dft_loss  # noqa: E402
from reference_impls.methods.fisher_sft import greedy_logdet  # noqa: E402
from reference_impls.methods.gem import gem_loss  # noqa: E402
from reference_impls.methods.iw_sft import iw_sft_loss  # noqa: E402
from reference_impls.methods.lima import lima_select  # noqa: E402
from reference_impls.methods.otr import otr_loss  # noqa: E402
from reference_impls.methods.token_cleaning import clean_mask, token_scores  # noqa: E402
from reference_impls.tasks.addition import Addition  # noqa: E402
from reference_impls.tasks.base_model import warm_start  # noqa: E402
from reference_impls.testing import flat_grad, save_parity_tiny  # noqa: F401

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()
disable_progress_bars()

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers 5 deprecation noise
METHOD_IDS = ["dft", "iw-sft", "gem", "token-cleaning", "otr", "lima", "fisher-sft"]
L = math.log


# ------------------------------------------------------------------------- DFT vs TRL 1.16
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parity tests' tiny model (reference_impls.testing.save_parity_tiny), saved once."""
    return save_parity_tiny(tmp_path_factory.mktemp("tiny"), "0123456789+= ")




def test_dft_matches_trl(tiny_dir: Path, tmp_path: Path) -> None:
    """TRL: per_token_loss * exp(log_probs).detach(), summed / #label tokens (a global token mean):
    the normalisation we follow. Ours: dft_loss(token_logprobs, labels[:, 1:] != -100)."""
    model = LlamaForCausalLM.from_pretrained(tiny_dir).train()
    data = {"prompt": ["1+2=", "33+4=", "5+6=", "7+80=", "12+9=", "4+4="],
            "completion": ["3", "37", "11", "87", "21", "8"]}
    args = SFTConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to="none",

                     save_strategy="no", max_steps=1, per_device_train_batch_size=6, loss_type="dft")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(data),
                         processing_class=PreTrainedTokenizerFast.from_pretrained(tiny_dir))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    loss_trl = trainer.compute_loss(model, dict(batch))
    g_trl = flat_grad(model, loss_trl)
    mask = (batch["labels"][:, 1:] != -100).float()  # [B, T-1]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss_ours, _ = dft_loss(token_logprobs(logits, batch["input_ids"]), mask)
    g_ours = flat_grad(model, loss_ours)
    assert g_trl.abs().max() > 0
    assert abs(loss_ours.item() - loss_trl.item()) <= 5e-6 * abs(loss_trl.item()) + 1e-7
    assert (g_ours - g_trl).abs().max() <= 5e-6 * g_trl.abs().max() + 1e-7
    # and it is not plain SFT: the weight sg(p) < 1 changes the value
    assert abs(loss_ours.item() + (token_logprobs(logits, batch["input_ids"]) * mask).sum().item()
               / mask.sum().item()) > 1e-3


def test_dft_hand_values() -> None:
    # two tokens p = 0.5, 0.25: L = -(0.5 ln 0.5 + 0.25 ln 0.25) / 2 = (0.346574 + 0.346574) / 2
    logp = torch.tensor([[L(0.5), L(0.25), 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, _ = dft_loss(logp, mask)
    assert loss.item() == pytest.approx(0.346574, abs=1e-5)
    loss.backward()  # dL/dlogp = -sg(p) / N: -0.25, -0.125, 0 (stop-gradient on the weight)
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, -0.125, 0.0]]), atol=1e-6)


# ------------------------------------------------------------------------- iw-SFT
def test_iw_sft_hand_values() -> None:
    # row 0: log-ratios (ln .5 - ln .25, 0) -> mean ln2/2 -> w = sqrt 2 = 1.414214
    # row 1: one token, ln .1 - ln .8 = ln .125 -> w = 0.125
    # row 2: one token, ln .9 - ln .01 = ln 90 -> exp = 90, clipped to w_max = 16
    # L = -(1.414214 (ln .5 + ln .25) + 0.125 ln .1 + 16 ln .9) / 4 tokens
    #   = -(1.414214 * -2.079442 + 0.125 * -2.302585 + 16 * -0.105361) / 4
    #   = -(-2.940770 - 0.287823 - 1.685768) / 4 = 4.914361 / 4 = 1.228590
    logp = torch.tensor([[L(.5), L(.25)], [L(.1), 0.0], [L(.9), 0.0]], requires_grad=True)
    ref = torch.tensor([[L(.25), L(.25)], [L(.8), 0.0], [L(.01), 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    loss, stats = iw_sft_loss(logp, ref, mask, temperature=1.0, w_max=16.0)
    assert loss.item() == pytest.approx(1.228590, abs=1e-5)
    loss.backward()  # stop-gradient on w: dL/dlogp = -w / 4
    want = -torch.tensor([[2**0.5, 2**0.5], [0.125, 0.0], [16.0, 0.0]]) / 4
    assert torch.allclose(logp.grad, want, atol=1e-6)
    assert stats["mean_weight"] == pytest.approx((2 * 2**0.5 + 0.125 + 16) / 4, abs=1e-5)
    # T = 2 squares the weights: row 0 -> 2, row 1 -> 1/64, row 2 -> clip 16
    loss2, _ = iw_sft_loss(logp.detach(), ref, mask, temperature=2.0, w_max=16.0)
    want2 = -(2 * (L(.5) + L(.25)) + L(.1) / 64 + 16 * L(.9)) / 4
    assert loss2.item() == pytest.approx(want2, abs=1e-5)


# ------------------------------------------------------------------------- GEM
def test_gem_hand_values() -> None:
    # one token, logits z = (1, 0, -1), target y = 1, beta = 0.5
    # q = softmax(z / 0.5) = (e^2, 1, e^-2) / 8.524391 = (0.866813, 0.117310, 0.015876)
    # log pi = z - ln(e + 1 + e^-1) = z - 1.407606 -> log pi(y) - log pi(v) = (-1, 0, 1)
    # linear:     l = -(0.866813 * -1 + 0 + 0.015876 * 1) = 0.850937
    # logsigmoid: w = sigmoid(0.01 (z - z_y)) = (0.502500, 0.5, 0.497500)
    #             l = 0.866813 * 0.502500 - 0.015876 * 0.497500 = 0.435574 - 0.007898 = 0.427676
    z = torch.tensor([[[1.0, 0.0, -1.0]]], requires_grad=True)
    y, m = torch.tensor([[1]]), torch.ones(1, 1)
    loss, _ = gem_loss(z, y, m, beta=0.5, h="linear")
    assert loss.item() == pytest.approx(0.850937, abs=1e-5)
    loss.backward()  # d l / d z = q - onehot(y) (q, w are stop-gradient)
    assert torch.allclose(z.grad, torch.tensor([[[0.866813, -0.882690, 0.015876]]]), atol=1e-5)
    loss_ls, _ = gem_loss(z, y, m, beta=0.5, h="logsigmoid")
    assert loss_ls.item() == pytest.approx(0.427676, abs=1e-5)
    # beta = 1, linear: the gradient is CE's, p - onehot(y)
    z.grad = None
    gem_loss(z, y, m, beta=1.0, h="linear")[0].backward()
    assert torch.allclose(z.grad, torch.softmax(z.detach(), -1) - torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


# ------------------------------------------------------------------------- Token Cleaning
def test_token_cleaning_hand_masks_and_loss() -> None:
    # scores s = log pi_ref - log pi_base:
    #   row 0: (ln .5 - ln .25, ln .3 - ln .3, ln .9 - ln .1) = (0.693147, 0, 2.197225)
    #   row 1: (ln .2 - ln .4, pad, pad)                      = (-0.693147, ., .)
    base = torch.tensor([[L(.25), L(.3), L(.1)], [L(.4), 0.0, 0.0]])
    ref = torch.tensor([[L(.5), L(.3), L(.9)], [L(.2), 5.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    s = token_scores(base, ref)
    assert torch.allclose(s[0], torch.tensor([0.693147, 0.0, 2.197225]), atol=1e-5)
    # keep 0.5 of 4 tokens -> the top 2: row 0 tokens 0 and 2 (padding, score 5, never kept)
    keep = clean_mask(s, mask, keep_ratio=0.5)
    assert keep.tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    # keep 0.6 -> ceil(2.4) = 3 tokens: adds the score-0 token
    assert clean_mask(s, mask, keep_ratio=0.6).tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    # fixed threshold -0.5: everything but row 1's -0.693
    assert clean_mask(s, mask, threshold=-0.5).tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    assert clean_mask(s, mask, threshold=1.0).tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    # strictly above: a score equal to the threshold (0) is dropped
    assert clean_mask(s, mask, threshold=0.0).tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    # loss on the kept tokens of the policy log-probs (ln .6, ., ln .7 kept): -(ln .6 + ln .7) / 2
    from reference_impls.methods.sft import sft_loss
    pol = torch.tensor([[L(.6), L(.01), L(.7)], [L(.01), 0.0, 0.0]])
    assert sft_loss(pol, keep).item() == pytest.approx(-(L(.6) + L(.7)) / 2, abs=1e-6)  # 0.433740


def test_token_cleaning_self_evolving_reference() -> None:
    """Self-evolving: the warm-up reference for the first ref_steps steps, then the policy itself
    (which, untrained here, equals the start model: every score is 0)."""
    mod = importlib.import_module("reference_impls.methods.token_cleaning")
    seed_everything(0)
    model, tok = load_model("tiny")
    cfg = mod.Config(batch_size=8, reference="self-evolving", ref_steps=2, keep_ratio=0.5)
    algo = mod.Algo(model, tok, Addition(), cfg)
    assert algo.collect(0)[1]["mean_score"] != 0.0  # warm-up reference (2 SFT steps)
    b, log = algo.collect(2)
    assert log["mean_score"] == 0.0 and 0.45 <= log["kept_frac"] <= 0.6


# ------------------------------------------------------------------------- OTR
def test_otr_hand_values() -> None:
    # one position, V = 3, pi = (0.5, 0.3, 0.2), y* = 0, K = 4 samples (0, 1, 0, 2)
    # r = (1, 0, 1, 0): l = -(1/4)(ln .5 + ln .5) = 0.346574
    # r_wrong = -0.5: r = (1, -.5, 1, -.5): l = -(1/4)(2 ln .5 - .5 ln .3 - .5 ln .2)
    #   = -(1/4)(-1.386294 + 0.601986 + 0.804719) = -0.005103
    logp = torch.log(torch.tensor([[[0.5, 0.3, 0.2]]])).requires_grad_(True)
    samples = torch.tensor([[[0, 1, 0, 2]]])
    hit = samples == 0
    m = torch.ones(1, 1)
    loss, _ = otr_loss(logp, samples, torch.where(hit, 1.0, 0.0), m)
    assert loss.item() == pytest.approx(0.346574, abs=1e-5)
    loss.backward()  # d l / d log pi(v) = -(1/K) sum_k r_k 1[a_k = v] = (-0.5, 0, 0)
    assert torch.allclose(logp.grad, torch.tensor([[[-0.5, 0.0, 0.0]]]))
    loss2, _ = otr_loss(logp, samples, torch.where(hit, 1.0, -0.5), m)
    assert loss2.item() == pytest.approx(-0.005103, abs=1e-5)


def test_otr_collect_rewards_the_ground_truth() -> None:
    """collect: K samples per position from the policy; reward 1 exactly where sample == y*."""
    mod = importlib.import_module("reference_impls.methods.otr")
    seed_everything(0)
    model, tok = load_model("tiny")
    algo = mod.Algo(model, tok, Addition(), mod.Config(batch_size=4, k=5, wrong_reward=-0.25))
    b, log = algo.collect(0)
    assert b["samples"].shape == (*b["mask"].shape, 5)
    hit = b["samples"] == b["input_ids"][:, 1:, None]
    assert torch.equal(b["rewards"], torch.where(hit, 1.0, -0.25))
    assert 0.0 <= log["hit_rate"] <= 1.0


# ------------------------------------------------------------------------- LIMA
def test_lima_subset_rule() -> None:
    # rows: 0 "aa" | 1 "aa" (duplicate prompt: out) | 2 "bb" | 3 "ab" | 4 "cc" | 5 "dd" (completion
    # 50 chars: above the 75 % length quantile of (2, 2, 2, 2, 50) = 2, out)
    demos = [("aa", "11"), ("aa", "12"), ("bb", "22"), ("ab", "33"), ("cc", "44"), ("dd", "5" * 50)]
    # bigram sets: ^a aa a$ | ^b bb b$ | ^a ab b$ | ^c cc c$; cosine: aa.ab = bb.ab = 1/3, others 0
    f = char_ngram_features(["aa", "bb", "ab", "cc"])
    assert torch.allclose(f @ f.T, torch.tensor([[1, 0, 1 / 3, 0], [0, 1, 1 / 3, 0],
                                                 [1 / 3, 1 / 3, 1, 0], [0, 0, 0, 1.0]]), atol=1e-6)
    # farthest point from row 0 "aa": "bb" (sim 0, first of the ties), then "cc" (0 vs "ab" 1/3)
    assert lima_select(demos, 3, len_lo=0.0, len_hi=0.75) == [0, 2, 4]
    assert lima_select(demos, 4, len_lo=0.0, len_hi=0.75) == [0, 2, 4, 3]
    assert sorted(lima_select(demos, 10, len_lo=0.0, len_hi=0.75)) == [0, 2, 3, 4]  # 1 and 5 never
    # without the length band, "dd" (similarity 0 to all) comes before "ab" (1/3)
    assert lima_select(demos, 4, len_lo=0.0, len_hi=1.0) == [0, 2, 4, 5]


# ------------------------------------------------------------------------- FisherSFT
def _logdet(feats: list[torch.Tensor], subset, ridge: float = 1.0) -> float:
    d = feats[0].shape[1]
    s = ridge * torch.eye(d, dtype=torch.float64)
    for i in subset:
        s = s + feats[i].double().T @ feats[i].double()
    return torch.logdet(s).item()


def test_fisher_greedy_against_brute_force() -> None:
    # designed pool: e1, e1 (copy), 0.6 (e1 + e2), e2, e3/2. Budget 2: every unit vector gains
    # ln 2 first (tie -> index 0, e1); then e2 gains ln 2 > 0.6(e1+e2) ln 1.54 > copy ln 1.5 >
    # e3/2 ln 1.25 -> {e1, e2}, which is the brute-force optimum: ln det diag(2, 2, 1) = 2 ln 2 = 1.386294
    e = torch.eye(3)
    pool = [e[0:1], e[0:1], (0.6 * e[0] + 0.6 * e[1])[None], e[1:2], 0.5 * e[2:3]]
    chosen, ld = greedy_logdet(pool, 2)
    assert chosen == [0, 3] and ld == pytest.approx(2 * L(2), abs=1e-9)
    best = max(_logdet(pool, s) for s in itertools.combinations(range(5), 2))
    assert ld == pytest.approx(best, abs=1e-9)
    # random pools of multi-token sentences: budget 1 is exactly the brute-force argmax; budget 2-3
    # within the (1 - 1/e) guarantee of greedy for monotone submodular log det (and the value is
    # what the chosen set's log det is)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        feats = [torch.randn(int(torch.randint(1, 4, (1,), generator=g)), 4, generator=g) for _ in range(7)]
        c1, _ = greedy_logdet(feats, 1)
        assert c1[0] == max(range(7), key=lambda i: _logdet(feats, [i]))
        for k in (2, 3):
            ck, ldk = greedy_logdet(feats, k)
            assert ldk == pytest.approx(_logdet(feats, ck), abs=1e-9)
            opt = max(_logdet(feats, s) for s in itertools.combinations(range(7), k))
            assert ldk >= (1 - 1 / math.e) * opt - 1e-9 and ldk <= opt + 1e-9


def test_fisher_features_and_selection_on_addition() -> None:
    mod = importlib.import_module("reference_impls.methods.fisher_sft")
    seed_everything(0)
    model, tok = load_model("tiny")
    algo = mod.Algo(model, tok, Addition(), mod.Config(pool_size=40, budget=8, batch_size=4))
    assert len(algo.subset) == 8 and len(set(algo.subset)) == 8
    b, _ = algo.collect(0)
    assert b["input_ids"].shape[0] == 4


# ------------------------------------------------------------------------- learning + smoke
# From the warm-started base (62.5 % greedy exact match on the ID split), `steps` steps at lr 1e-3,
# batch 64, seed 0. Each method must reach `threshold`; the same method with its loss sign flipped
# (15 steps) must stay below it. Measured on 2 CPU cores, seed 0 (flipped runs: 0 % after 30 steps):
#   dft 82 %, iw-sft 78.5 %, token-cleaning 75 %, fisher-sft 69 % (60 steps);
#   gem 86.5 %, otr 80 %, lima 79.5 % (30 steps).
# Token cleaning's self-evolving variant is not asserted to learn: with the policy as reference it
# stops training the tokens the start model already predicted (EOS among them) and fell to 31.5 %.
LEARN = [("dft", 60, 0.72), ("iw-sft", 60, 0.70), ("token-cleaning", 60, 0.68),
         ("fisher-sft", 60, 0.66), ("gem", 30, 0.72), ("otr", 30, 0.72), ("lima", 30, 0.72)]


def _train_from_base(method: str, flip: bool, steps: int, **cfg) -> float:
    mod = importlib.import_module(f"reference_impls.methods.{method.replace('-', '_')}")
    task = Addition()
    seed_everything(0)
    model, tok = load_model(str(warm_start()))
    seed_everything(0)
    c = mod.Config(steps=steps, batch_size=64, lr=1e-3, warmup_steps=0, **cfg)
    algo = mod.Algo(model, tok, task, c, seed=0)
    if flip:
        loss = algo.loss
        algo.loss = lambda micro, totals: (lambda r: (-r[0], r[1]))(loss(micro, totals))
    train(algo, c, progress=False)
    return accuracy(model, tok, task, task.eval_sets["in_distribution"])


@pytest.mark.slow
@pytest.mark.parametrize(("method", "steps", "threshold"), LEARN)
def test_learns_addition_from_base(method: str, steps: int, threshold: float) -> None:
    assert _train_from_base(method, False, steps) >= threshold
    assert _train_from_base(method, True, 15) < threshold  # a sign-flipped loss misses it


@pytest.mark.parametrize("method", METHOD_IDS)
def test_runner_two_steps(method: str, tmp_path: Path) -> None:
    if method not in runner.METHODS:
        pytest.skip(f"{method} not registered yet (scripts/set_impl.py)")
    r = runner.run(method, steps=2, out=tmp_path, progress=False)
    assert r.status == "finished"


def test_methods_are_task_agnostic() -> None:
    """No method module reaches into a concrete task (addition helpers, digits...)."""
    for m in METHOD_IDS:
        src = Path(importlib.import_module(f"reference_impls.methods.{m.replace('-', '_')}").__file__).read_text()
        assert "tasks.addition" not in src and "digits" not in src, m
