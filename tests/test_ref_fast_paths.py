"""The faster code paths agree with the plain ones: fused AdamW, batched tokenisation, and DPO's
single [chosen; rejected] forward per model."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

import reference_impls.testing  # noqa: F401  (HF offline, 1 torch thread)
from reference_impls.core.logprobs import sequence_logprobs
from reference_impls.core.model import load_model
from reference_impls.core.sampling import encode, prompt_completion_batch
from reference_impls.core.train import TrainConfig, make_optimizer
from reference_impls.methods.dpo import summed_logprobs
from reference_impls.testing import make_algo


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def test_fused_adamw_on_cpu_matches_per_parameter():
    torch.manual_seed(0)
    a = torch.nn.Linear(16, 8)
    b = torch.nn.Linear(16, 8)
    b.load_state_dict(a.state_dict())
    fused, plain = make_optimizer(a, TrainConfig(lr=1e-2)), make_optimizer(b, TrainConfig(lr=1e-2, fused=False))
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    for _ in range(5):
        x = torch.randn(4, 16)
        for m, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            m(x).pow(2).sum().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)


def test_batched_encode_equals_per_string(tiny):
    _, tok = tiny
    texts = ["12+34=", "", "7", "99+1=100"]
    assert encode(tok, texts) == [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_dpo_one_forward_equals_separate_forwards():
    """[chosen; rejected] padded to one width and scored together = each half scored on its own."""
    algo = make_algo("dpo", batch_size=6)
    pairs = [("1+2=", "3", "4"), ("33+4=", "37", "38x"), ("5+6=", "11", "12"), ("7+80=", "87", "8")]
    batch = algo.pairs_batch(pairs)
    assert batch["chosen_input_ids"].shape == batch["rejected_input_ids"].shape
    with torch.no_grad():
        pi_c, pi_r = summed_logprobs(algo.module, batch)  # one forward
        for col, got in ((1, pi_c), (2, pi_r)):
            b = prompt_completion_batch(algo.tok, [p[0] for p in pairs], [p[col] for p in pairs])
            want = (sequence_logprobs(algo.module, b["input_ids"], b["attention_mask"]) * b["mask"]).sum(-1)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch["ref_chosen"], pi_c, atol=1e-5, rtol=1e-5)  # ref = pi_0
    torch.testing.assert_close(batch["ref_rejected"], pi_r, atol=1e-5, rtol=1e-5)
