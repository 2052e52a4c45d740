"""The GPU path's memory and speed switches, checked on CPU (issue 13 §3): chunked log-probs
(`TrainConfig.logit_chunk`), gradient checkpointing (`TrainConfig.gradient_checkpointing`) and the
sampler's cache choice (static on CUDA). What they save on a GPU is measured by
benchmarks/gpu_check.py, not here."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import Gemma2Config, Gemma2ForCausalLM

from reference_impls.core import logprobs
from reference_impls.core.logprobs import (
    logit_chunking,
    sequence_logprobs,
)
from reference_impls.core.lora import AdapterDisabled, apply_lora, parse_lora, trainable_copy
from reference_impls.core.model import is_checkpointing, load_model, set_gradient_checkpointing
from reference_impls.core.sampling import cache_choice, encode, left_pad, sample
from reference_impls.core.train import TrainConfig, train
from reference_impls.testing import make_algo, params

TEMP = 0.7


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def batch(tok, texts=("1+2=3", "12+34=46", "7*8=56 ok", "9")):
    ids, mask = left_pad(encode(tok, list(texts)), tok.pad_token_id)  # left padding: positions matter
    return ids, mask


def scored(model, ids, mask, chunk, entropy=True):
    """(logp, entropy, hidden) and the gradient of a loss using all three, w.r.t. every parameter."""
    model.zero_grad(set_to_none=True)
    logp, ent, hid = sequence_logprobs(model, ids, mask, TEMP, return_hidden=True,
                                       return_entropy=entropy, chunk=chunk)
    w = torch.linspace(-1, 1, logp.numel()).view_as(logp)
    (w * logp + 0.3 * w.flip(0) * ent).sum().add(hid.pow(2).mean()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), ent.detach(), hid.detach(), grads


def assert_same(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(a[:3], b[:3], strict=True):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)
    assert a[3].keys() == b[3].keys() and a[3]
    for n in a[3]:
        torch.testing.assert_close(a[3][n], b[3][n], rtol=rtol, atol=atol, msg=n)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_logprobs_equal_plain_values_and_gradients(tiny, chunk):
    model, tok = tiny
    ids, mask = batch(tok)
    assert_same(scored(model, ids, mask, chunk), scored(model, ids, mask, 0))


def test_chunked_logprobs_without_entropy_or_hidden_and_without_grad(tiny):
    model, tok = tiny
    ids, mask = batch(tok)
    with torch.no_grad():
        a = sequence_logprobs(model, ids, mask, TEMP, chunk=5)
        b = sequence_logprobs(model, ids, mask, TEMP)
    assert a.shape == (ids.shape[0], ids.shape[1] - 1)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class VocabRows(TorchDispatchMode):
    """The most rows of any tensor whose last dimension is the vocabulary (logits and friends;
    the head's transposed weight [H, V] aside)."""

    def __init__(self, vocab, hidden):
        super().__init__()
        self.vocab, self.hidden, self.rows = vocab, hidden, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else [out]:
            if (isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == self.vocab
                    and tuple(t.shape) != (self.hidden, self.vocab)):
                self.rows = max(self.rows, t.numel() // self.vocab)
        return out


def test_chunked_logits_never_exist_for_the_whole_batch(tiny):
    """Forward and backward: no [*, V] tensor with more rows than one chunk (plain: B*T rows)."""
    model, tok = tiny
    ids, mask = batch(tok)
    V, chunk = model.config.vocab_size, 6
    assert V not in (model.config.hidden_size, model.config.intermediate_size)
    rows = {}
    for c in (0, chunk):
        saved = []  # rows of the [*, V] tensors the graph keeps for backward (all at once)

        def pack(t, saved=saved):
            if t.dim() >= 2 and t.shape[-1] == V and tuple(t.shape) != (model.config.hidden_size, V):
                saved.append(t.numel() // V)
            return t

        with VocabRows(V, model.config.hidden_size) as mode:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                logp, ent = sequence_logprobs(model, ids, mask, TEMP, return_entropy=True, chunk=c)
            (logp.sum() + ent.sum()).backward()
        rows[c] = (mode.rows, max(saved, default=0), sum(saved))
    model.zero_grad(set_to_none=True)
    n = ids.shape[0] * (ids.shape[1] - 1)
    assert rows[0][0] >= n and rows[0][1] >= n  # the plain path: whole-batch logits, kept
    assert rows[chunk][0] <= chunk and rows[chunk][2] == 0, rows  # chunked: recomputed in backward


def test_logit_chunking_routes_the_shared_helper_and_train_applies_it(tiny, monkeypatch):
    model, tok = tiny
    ids, mask = batch(tok)
    calls = []
    real = logprobs.chunked_sequence_logprobs

    def spy(*a, **k):
        calls.append((a[3], torch.is_grad_enabled()))
        return real(*a, **k)

    monkeypatch.setattr(logprobs, "chunked_sequence_logprobs", spy)
    sequence_logprobs(model, ids, mask)
    assert calls == []  # default: the plain path
    with logit_chunking(4):
        sequence_logprobs(model, ids, mask)
    assert calls == [(4, True)]
    sequence_logprobs(model, ids, mask)
    assert calls == [(4, True)]  # restored on exit
    with pytest.raises(ValueError, match="logit_chunk must be >= 0"), logit_chunking(-1):
        pass
    with pytest.raises(ValueError, match="logit_chunk must be >= 0"):
        TrainConfig(logit_chunk=-1)
    calls.clear()
    algo = make_algo("grpo", steps=1, batch_size=4, group_size=2, beta=0.04, logit_chunk=5)
    train(algo, algo.cfg, progress=False)
    assert set(calls) == {(5, False), (5, True)}  # collect (reference, no grad) and loss: chunked


def test_grpo_training_with_logit_chunk_equals_plain():
    """Two GRPO steps (sampling, reference KL, loss) reach the same weights with chunked scoring."""
    out = []
    for chunk in (0, 5):
        algo = make_algo("grpo", steps=2, batch_size=4, group_size=2, beta=0.04, logit_chunk=chunk)
        train(algo, algo.cfg, progress=False)
        out.append(params(algo.module))
    for k in out[0]:
        torch.testing.assert_close(out[1][k], out[0][k], rtol=1e-5, atol=1e-6, msg=k)


def test_chunked_logprobs_on_lora_policy_and_its_adapter_disabled_reference():
    model, tok = load_model("tiny")
    apply_lora(model, parse_lora("r=4,alpha=8,targets=q_proj,v_proj"))
    with torch.no_grad():  # a non-zero B: the adapters change the output
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    ids, mask = batch(tok)
    assert_same(scored(model, ids, mask, 5), scored(model, ids, mask, 0))
    ref = copy.deepcopy(model)
    assert isinstance(ref, AdapterDisabled)
    with torch.no_grad():
        r5, r0 = (sequence_logprobs(ref, ids, mask, TEMP, chunk=c) for c in (5, 0))
        pol = sequence_logprobs(model, ids, mask, TEMP, chunk=5)
    torch.testing.assert_close(r5, r0, rtol=1e-5, atol=1e-6)
    assert (r5 - pol).abs().max() > 1e-3  # the reference really runs without the adapters
    view = trainable_copy(model)  # a second adapter on the same base (AdapterView)
    with torch.no_grad():
        for p in view.parameters():
            p.mul_(-1.5)
    v5, v0 = scored(view, ids, mask, 5), scored(view, ids, mask, 0)
    assert_same(v5, v0)
    assert (v5[0] - pol).abs().max() > 1e-3  # it runs its own adapter, not the policy's


def test_chunked_logprobs_apply_final_logit_softcapping():
    """Gemma 2 soft-caps its logits after the head: the chunked path must too."""
    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                       final_logit_softcapping=0.5, pad_token_id=0)
    model = Gemma2ForCausalLM(cfg)
    ids = torch.randint(1, 40, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    assert_same(scored(model, ids, mask, 4), scored(model, ids, mask, 0))


def test_gradient_checkpointing_same_gradients_and_recomputes(tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    ids, mask = batch(tok)
    mlp = model.model.layers[0].mlp  # inside the checkpointed block (module hooks are not rerun)
    runs, forward = [], mlp.forward

    def counted(*a, **k):
        runs.append(1)
        return forward(*a, **k)

    mlp.forward = counted
    model.train()
    try:
        plain = scored(model, ids, mask, 0)
        n_plain = len(runs)
        assert set_gradient_checkpointing(model, True) >= 1 and is_checkpointing(model)
        runs.clear()
        ckpt = scored(model, ids, mask, 0)
        assert len(runs) == 2 * n_plain  # the block ran again in backward
        assert_same(ckpt, plain)
        set_gradient_checkpointing(model, False)
        assert not is_checkpointing(model)
    finally:
        del mlp.forward


def test_train_applies_gradient_checkpointing_with_same_result():
    out = []
    for gc in (False, True):
        algo = make_algo("sft", steps=2, batch_size=4, gradient_checkpointing=gc)
        train(algo, algo.cfg, progress=False)
        assert is_checkpointing(algo.module) == gc
        out.append(params(algo.module))
    for k in out[0]:
        torch.testing.assert_close(out[1][k], out[0][k], rtol=1e-5, atol=1e-6, msg=k)


def test_sampler_cache_choice():
    assert cache_choice(None, torch.device("cuda")) == "static"  # the GPU default
    assert cache_choice(None, torch.device("cuda"), fsdp=True) is None
    assert cache_choice(None, torch.device("cpu")) is None  # CPU: unchanged (dynamic)
    assert cache_choice("dynamic", torch.device("cuda")) == "dynamic"  # the user's choice wins
    assert cache_choice("static", torch.device("cpu")) == "static"


def test_static_cache_greedy_equals_dynamic_on_cpu(tiny):
    model, tok = tiny
    prompts = ["1+2=", "12+34=", "123+456=", "9"]
    a = sample(model, tok, prompts, 6, greedy=True)
    b = sample(model, tok, prompts, 6, greedy=True, cache_implementation="static")
    assert torch.equal(a.input_ids, b.input_ids) and a.completions == b.completions
