"""LoRA adapters (Hu et al., arXiv 2106.09685) for every method, with the `peft` package:

    sftrl run grpo --lora r=16,alpha=32,targets=q_proj,v_proj

    h = W x + (alpha / r) B A x,   A [r, d_in] random, B [d_out, r] zeros: training starts at W.

Only A and B train; the base weights are frozen. `peft` puts its LoRA layers into the model in
place, and the methods receive that model itself (a plain Hugging Face causal LM whose target
projections carry adapters): generation, critics built on `policy.base_model` (PPO, ArCHer: they
get their own copy of the adapters on a frozen copy of the backbone) and checkpoints (the whole
`state_dict`, adapters included) work unchanged.

The reference model. KL-regularised methods build their frozen reference as
`copy.deepcopy(policy)`; on a LoRA policy that deepcopy returns `AdapterDisabled(policy)`, the
same weights run inside peft's `disable_adapter()`: the base model, with no second copy in memory.
A method that *trains* its copy (token-cleaning's fine-tuned reference) asks for
`trainable_copy(policy)`: on a LoRA policy, a second adapter (peft's multi-adapter) on the same
frozen base weights, run through `AdapterView`. Memory cost: one more set of adapters (plus their
AdamW state while they train), no second copy of the base.

The reward model (the rm stage) gets LoRA on its backbone, with the policy's spec; its scalar head
is trained in full (core/reward_model.build_reward_model).

At the end of a stage the runner merges the policy's adapter into the weights (W + alpha/r B A) and
saves a plain model (a reward model is merged before it is saved): the next stage starts from it
with fresh adapters.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable

import torch
from pydantic import BaseModel, Field, ValidationError
from torch import nn


class LoraSpec(BaseModel):
    r: int = Field(16, gt=0)  # adapter rank
    alpha: float = Field(32.0, gt=0)  # scale alpha / r
    targets: list[str] = ["q_proj", "v_proj"]  # names of the linear layers that get adapters
    dropout: float = Field(0.0, ge=0, lt=1)  # dropout on the adapter input


POLICY = "default"  # peft's name of the first adapter: the policy's own


def parse_lora(text: str) -> LoraSpec:
    """'r=16,alpha=32,targets=q_proj,v_proj' -> LoraSpec. A comma-separated item without '='
    continues the list of the key before it (targets)."""
    kv: dict[str, list[str]] = {}
    key = None
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        if "=" in item:
            key, _, value = item.partition("=")
            key = key.strip()
            if key not in LoraSpec.model_fields:
                raise ValueError(f"--lora {text!r}: unknown key {key!r}; known: "
                                 f"{', '.join(LoraSpec.model_fields)} (e.g. r=16,alpha=32,targets=q_proj,v_proj)")
            kv[key] = [value.strip()]
        elif key == "targets":
            kv[key].append(item)
        else:
            raise ValueError(f"--lora {text!r}: {item!r} is not KEY=VALUE "
                             "(e.g. r=16,alpha=32,targets=q_proj,v_proj)")
    fields = {k: (v if k == "targets" else v[0]) for k, v in kv.items()}
    try:
        return LoraSpec(**fields)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ValueError(f"--lora {text!r}: {errs}") from None


class AdapterDisabled:
    """The frozen reference of a LoRA policy: the policy's own module, run with adapters off.
    Quacks like the frozen `deepcopy(model).eval().requires_grad_(False)` it replaces."""

    is_adapter_disabled_view = True

    def __init__(self, model: nn.Module):
        object.__setattr__(self, "model", model)

    def _off(self):
        return self.model._sftrl_peft.disable_adapter()

    def __call__(self, *args, **kwargs):
        with self._off():
            return self.model(*args, **kwargs)

    forward = __call__

    def generate(self, *args, **kwargs):
        with self._off():
            return self.model.generate(*args, **kwargs)

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def requires_grad_(self, requires_grad: bool = True):
        return self

    def to(self, *args, **kwargs):
        return self

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self.model, name, value)


def apply_lora(model: nn.Module, spec: LoraSpec, full: Iterable[nn.Module] = ()) -> nn.Module:
    """Put LoRA adapters into `model` in place (base frozen) and return it. The submodules in
    `full` (a reward model's scalar head) are trained in full beside the adapters."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if missing := [t for t in spec.targets if t not in names]:
        raise ValueError(f"--lora targets: no linear layer named {', '.join(missing)} in this model "
                         f"(its linear layers: {', '.join(sorted(names))})")
    cfg = LoraConfig(r=spec.r, lora_alpha=spec.alpha, target_modules=spec.targets,
                     lora_dropout=spec.dropout, bias="none")
    peft_model = get_peft_model(model, cfg)  # injects the LoRA layers into `model` itself
    object.__setattr__(model, "_sftrl_peft", peft_model)  # not a submodule: no cycle, no state
    object.__setattr__(model, "__deepcopy__", lambda memo: AdapterDisabled(model))
    object.__setattr__(model, "_sftrl_lora", spec)
    for m in full:
        m.requires_grad_(True)
    return model


def has_lora(model: nn.Module) -> bool:
    return "_sftrl_peft" in vars(model)


def lora_spec(model: nn.Module) -> LoraSpec | None:
    """The LoraSpec `model`'s adapters were made with (None: a plain model)."""
    return vars(model).get("_sftrl_lora")


@contextlib.contextmanager
def _active(model: nn.Module, name: str):
    """Run `model` with adapter `name` instead of the active one. Which parameters train is left as
    it was (peft's set_adapter would also make `name` the only trainable adapter)."""
    peft, flags = model._sftrl_peft, [(p, p.requires_grad) for p in model.parameters()]
    old = peft.active_adapter
    peft.set_adapter(name)
    try:
        for p, f in flags:
            p.requires_grad_(f)
        yield
    finally:
        peft.set_adapter(old)
        for p, f in flags:
            p.requires_grad_(f)


class AdapterView(AdapterDisabled):
    """A second LoRA model on the policy's frozen base weights: the policy's module run with its
    adapter `name` instead of the policy's. Its parameters are that adapter's only (what an optimizer
    of this view trains); train()/eval() set the shared module's mode."""

    is_adapter_disabled_view = False

    def __init__(self, model: nn.Module, name: str):
        super().__init__(model)
        object.__setattr__(self, "name", name)

    def _off(self):
        return _active(self.model, self.name)

    def named_parameters(self, *args, **kwargs):
        return ((n, p) for n, p in self.model.named_parameters()
                if ".lora_" in n and n.split(".")[-2] == self.name)

    def parameters(self, recurse: bool = True):
        return (p for _, p in self.named_parameters())

    def requires_grad_(self, requires_grad: bool = True):
        """Frozen: its gradients are dropped too (they live in the policy's module, where the
        policy's gradient-norm clipping would count and rescale them)."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
            if not requires_grad:
                p.grad = None
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def eval(self):
        return self.train(False)


def trainable_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` that can be trained. A plain model: `copy.deepcopy(model)`. A LoRA policy
    (whose deepcopy is its frozen, adapter-disabled base): a second adapter of the same spec on the
    same base weights, holding a copy of the policy's adapter (so it starts as the policy), as an
    AdapterView whose parameters are that adapter. Memory: one set of adapters, not a model copy."""
    if not has_lora(model):
        return copy.deepcopy(model)
    peft = model._sftrl_peft
    name = f"copy{len(peft.peft_config)}"
    with torch.random.fork_rng(devices=[]):  # its initial values are overwritten: leave the RNG be
        peft.add_adapter(name, peft.peft_config[POLICY])
    weights = dict(model.named_parameters())
    with torch.no_grad():
        for n, p in weights.items():
            if ".lora_" in n and n.split(".")[-2] == POLICY:
                parts = n.split(".")
                weights[".".join([*parts[:-2], name, parts[-1]])].copy_(p)
    return AdapterView(model, name).requires_grad_(True)


def adapter_names(model: nn.Module) -> set[str]:
    """The parameter names that train (the adapters)."""
    return {n for n, p in model.named_parameters() if p.requires_grad}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the weights (W + alpha/r B A) and remove them: a plain model again."""
    if not has_lora(model):
        return model
    merged = model._sftrl_peft.merge_and_unload(adapter_names=[POLICY])  # a copy's adapter is dropped
    for attr in ("_sftrl_peft", "__deepcopy__", "_sftrl_lora"):
        vars(model).pop(attr, None)
    with contextlib.suppress(AttributeError):
        del merged.peft_config
    merged.requires_grad_(True)
    return merged
