"""Real checkpoints behave as the equations assume, and the checks that a review found missing:
dropout off, sampling from plain softmax(z/T) whatever the saved generation_config, BOS where the
tokenizer wants it, special tokens out of decoded text, one-sample groups, and mutation-catching
checks of PPO's collect(), GRPO's temperature and the sampled EOS."""

from __future__ import annotations

import math
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig

import reference_impls.testing  # noqa: F401  (HF offline, 1 torch thread)
from reference_impls.core.logprobs import position_ids, sequence_logprobs, token_logprobs
from reference_impls.core.losses import group_advantages
from reference_impls.core.model import load_model
from reference_impls.core.sampling import encode, sample
from reference_impls.core.train import step_rng
from reference_impls.tasks.addition import Addition
from reference_impls.tasks.base_model import warm_start
from reference_impls.testing import make_algo


@pytest.fixture(scope="module")
def base_path():
    return warm_start()


def test_dropout_is_off_for_policy_and_reference(tmp_path, base_path):
    """A checkpoint saved with attention dropout: the DPO step-0 loss is exactly ln 2 (policy ==
    reference), which dropout on the policy's forward would break (the review measured 0.754)."""
    model = AutoModelForCausalLM.from_pretrained(base_path, attention_dropout=0.3)
    model.save_pretrained(tmp_path)
    load_model(str(base_path))[1].save_pretrained(tmp_path)
    policy, tok = load_model(str(tmp_path))
    assert policy.config.attention_dropout == 0.0
    from reference_impls.methods import dpo

    algo = dpo.Algo(policy, tok, Addition(), dpo.Config(batch_size=16))
    policy.train()  # the loop trains in train mode: dropout must still be off
    batch, _ = algo.collect(0)
    loss, _ = algo.loss(batch, {"rows": 16})
    assert abs(loss.item() - math.log(2)) < 1e-6


def test_saved_generation_config_does_not_change_sampling(tmp_path, base_path):
    model, tok = load_model(str(base_path))
    prompts = [p.prompt for p in Addition().eval_sets["out_of_distribution"][:100]]
    plain = sample(model, tok, prompts, 6, greedy=True).completions
    saved = GenerationConfig(repetition_penalty=1.3, min_new_tokens=4)
    model.generation_config = saved
    assert sample(model, tok, prompts, 6, greedy=True).completions == plain
    torch.manual_seed(0)
    a = sample(model, tok, prompts, 6, temperature=0.8).input_ids
    assert model.generation_config is saved  # restored after sampling
    model.generation_config = GenerationConfig()
    torch.manual_seed(0)
    b = sample(model, tok, prompts, 6, temperature=0.8).input_ids
    assert torch.equal(a, b)


def test_bos_for_tokenizers_that_expect_it_and_no_special_tokens_in_text(base_path):
    model, tok = load_model(str(base_path))
    assert encode(tok, ["1+2="], prompt=True) == encode(tok, ["1+2="])  # tiny: no BOS
    tok.bos_token = "<unk>"  # pretend a Llama-style tokenizer: BOS expected in front of prompts
    tok.add_bos_token = True
    (ids,) = encode(tok, ["1+2="], prompt=True)
    assert ids[0] == tok.bos_token_id and ids[1:] == encode(tok, ["1+2="])[0]
    assert encode(tok, ["3"])[0][0] != tok.bos_token_id  # completions never get one
    ro = sample(model, tok, ["1+2="], 4, greedy=True)
    assert ro.input_ids[0, :ro.prompt_len].tolist()[-5] == tok.bos_token_id
    assert "<" not in "".join(ro.completions)


def test_one_sample_groups_have_zero_advantage_not_nan():
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0]), 1, "std")
    assert torch.equal(adv, torch.zeros(3))


def test_sampled_eos_is_in_the_loss_mask(base_path):
    """Greedy decoding on the base ends every 2-digit sum with EOS well within the budget, so the
    check does not depend on a seed: the EOS token must be a scored completion token."""
    model, tok = load_model(str(base_path))
    probs = Addition().eval_sets["in_distribution"][:32]
    ro = sample(model, tok, [p.prompt for p in probs], 8, greedy=True)
    scored = ro.input_ids[:, 1:]  # token t+1 is scored at position t
    eos_scored = ((scored == tok.eos_token_id) & ro.mask.bool()).sum(-1)
    assert (eos_scored == 1).all()  # exactly one EOS per row, inside the mask


def _decode_rows(tok, batch):
    out = []
    for ids, m in zip(batch["input_ids"][:, 1:].tolist(), batch["mask"].tolist(), strict=True):
        out.append(tok.decode([t for t, k in zip(ids, m, strict=True) if k and t != tok.eos_token_id]))
    return out


def test_ppo_collect_rewards_and_advantages_by_hand():
    """PPO's collect() against a per-token loop written from the equations, with gamma != lambda
    and a reference that differs from the policy (so the KL-in-reward sign matters)."""
    algo = make_algo("ppo", seed=1, base=True, batch_size=8, gamma=0.9, lam=0.5, kl_coef=0.3,
                     whiten=False)
    with torch.no_grad():
        for p in algo.ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
        head = algo.module["critic"].head  # zero-initialised: V = 0 would make GAE symmetric in gamma, lam
        head.weight.normal_(0, 0.5)
        head.bias.fill_(0.3)
    problems = Addition().prompts(8, step_rng(1, 0))
    b, _ = algo.collect(0)
    texts = _decode_rows(algo.tok, b)
    ref = sequence_logprobs(algo.ref, b["input_ids"], b["attention_mask"])
    for i in range(8):
        idx = b["mask"][i].nonzero().flatten().tolist()
        score = Addition().reward(problems[i], texts[i])
        r = [-0.3 * (b["old_logp"][i, t] - ref[i, t]).item() for t in idx]  # r_t = -kl_coef (log pi - log ref)
        r[-1] += score
        v = [b["old_values"][i, t].item() for t in idx] + [0.0]  # V after the last token: 0
        adv, last = [0.0] * len(idx), 0.0
        for j in reversed(range(len(idx))):
            delta = r[j] + 0.9 * v[j + 1] - v[j]  # delta = r + gamma V' - V
            last = delta + 0.9 * 0.5 * last  # A = delta + gamma lam A'
            adv[j] = last
        torch.testing.assert_close(b["advantages"][i, idx], torch.tensor(adv), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b["returns"][i, idx], torch.tensor(adv) + torch.tensor(v[:-1]),
                                   atol=1e-5, rtol=1e-4)


def test_grpo_scores_at_the_sampling_temperature():
    """Old log-probs are log softmax(z/T) of the sampled tokens, T = 0.7, computed independently."""
    algo = make_algo("grpo", seed=2, base=True, batch_size=16, temperature=0.7, updates_per_batch=2)
    b, _ = algo.collect(0)
    with torch.no_grad():
        logits = algo.module(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                             position_ids=position_ids(b["attention_mask"])).logits
    want = token_logprobs(logits, b["input_ids"], 0.7)
    m = b["mask"].bool()
    torch.testing.assert_close(b["old_logp"][m], want[m], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(token_logprobs(logits, b["input_ids"], 1.0)[m], want[m], atol=1e-3)


def test_task_streams_are_pure_functions_of_seed_and_step():
    t = Addition()
    assert t.prompts(5, random.Random(7)) == t.prompts(5, random.Random(7))
