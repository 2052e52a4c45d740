"""ArCHer (Zhou, Zanette, Pan, Levine, Kumar, arXiv 2402.19446): hierarchical multi-turn
actor-critic. High level: an utterance-level critic learned off-policy by TD from a replay buffer of
turns (s, a, r, s', done), s = the dialogue so far, a = the policy's whole utterance. Low level: a
token-level policy gradient inside each utterance, whose reward is the critic's advantage.

Double critics Q_1,2(s, a), V_1,2(s) and a target copy (bar) updated by Polyak averaging:
    y_Q,k = r + gamma (1 - done) Vbar_k(s')                 (Q target, TD over utterances)
    y_V,k = Qbar_k(s, a~pi(.|s))                             (V target, a fresh utterance of pi)
    L_critic = sum_k mean (Q_k(s, a) - y_Q,k)^2 + mean (V_k(s) - y_V,k)^2
    A(s, a~pi) = min_k Q_k(s, a) - min_k V_k(s)             (online critic, no gradient)
    L_actor = - mean_{(s,a)} A(s, a) sum_h log pi(a^h | s, a^{<h})   (every token of a gets A)
    phibar <- (1 - tau) phibar + tau phi                      (after every critic update)
Conventions: log-probs are summed over an utterance's tokens (EOS included) and averaged over
utterances (rows); the critic losses are row means; L = L_actor + critic_coef L_critic.
We follow the official code (github.com/YifeiZhou02/ArCHer, archer/algorithms/archer/trainer.py):
per-head targets (no min inside the targets), V regressed on the target Q of a fresh policy
utterance, advantages on fresh utterances at replayed states, the plain-REINFORCE actor
(use_baseline=False, no token-level value baseline), gamma = 0.95, tau = 0.1, and `actor_warmup`
critic-only steps (official warmup_iter = 20). Differences, ours: the critic is a copy of the
policy's backbone with MLP heads on the hidden state at the end of s (V) and of s + a (Q) (official:
a separate RoBERTa encoding s and a apart); one AdamW over actor and critic and one critic and one
actor update per step (official: two Adams with their own lrs, 50 critic and 3 actor epochs per
iteration); the advantages of a step come from the critic before that step's update. Multi-turn
rollouts call core.sampling.sample once per turn with the dialogue so far as the prompt, the task
(signal "multi_turn", e.g. tasks/guess.py) appending the environment's reply. lr, steps, batch
sizes and the buffer capacity are ours, for the tiny preset.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reference_impls.core.logprobs import position_ids, sequence_logprobs
from reference_impls.core.sampling import encode, left_pad, prompt_completion_batch, sample
from reference_impls.core.train import Batch, TrainConfig, step_rng

NEEDS = {"verifiable_reward", "multi_turn"}  # signals asked of the task (tasks/base.py, tasks/guess.py)
STARTS_FROM_BASE = False  # the addition warm start would not help a multi-turn game


@dataclass
class Config(TrainConfig):
    steps: int = 60  # optimizer steps (one critic + one actor update each)
    batch_size: int = 32  # replayed turns per step (critic and actor rows)
    lr: float = 1e-3  # peak learning rate (ours, tiny preset)
    episodes: int = 16  # games played per step, every turn pushed to the replay buffer
    capacity: int = 1024  # replay buffer size in turns (official: 100000)
    gamma: float = 0.95  # discount over utterances (official default.yaml: 0.95)
    tau: float = 0.1  # Polyak rate of the target critic (official: 0.1)
    actor_warmup: int = 5  # first steps train only the critic (official: warmup_iter = 20 iterations)
    whiten: bool = False  # normalise the advantages over the step's rows (ours; official: raw A)
    critic_coef: float = 1.0  # weight of the critic loss in the one summed loss
    temperature: float = 1.0  # sampling temperature (log-probs are scored at the same T)
    max_new_tokens: int = 6  # utterance budget (the runner sets the task's unless given)
    max_turns: int = 32  # safety cap on a game's turns (the task ends its games earlier)
    sampler_cache: str | None = None  # "static": fixed-shape KV cache (compiled decode on CUDA)


def critic_targets(reward: Tensor, done: Tensor, next_v_bar: Tensor, q_bar_pi: Tensor,
                   gamma: float) -> tuple[Tensor, Tensor]:
    """reward, done [N]; next_v_bar = Vbar_k(s'), q_bar_pi = Qbar_k(s, a~pi) [N, 2] ->
    (y_Q, y_V) [N, 2]."""
    y_q = reward[:, None] + gamma * (1 - done[:, None]) * next_v_bar  # r + gamma (1 - d) Vbar(s')
    return y_q, q_bar_pi  # y_V = Qbar(s, a~pi)


def critic_loss(q: Tensor, v: Tensor, y_q: Tensor, y_v: Tensor, *, total_rows: int | None = None) -> Tensor:
    """sum over the two heads of mean (Q - y_Q)^2 + mean (V - y_V)^2; all [N, 2] -> scalar."""
    n = q.shape[0] if total_rows is None else total_rows
    return (((q - y_q) ** 2).sum() + ((v - y_v) ** 2).sum()) / n


def advantage(q: Tensor, v: Tensor) -> Tensor:
    """A = min_k Q_k(s, a) - min_k V_k(s).   q, v [N, 2] -> [N]."""
    return q.min(-1).values - v.min(-1).values


def actor_loss(logp: Tensor, mask: Tensor, adv: Tensor, *, total_rows: int | None = None) -> Tensor:
    """- mean_i A_i sum_h m_ih log pi_ih.   logp, mask [N, T]; adv [N] -> scalar."""
    n = logp.shape[0] if total_rows is None else total_rows
    return -(adv * (logp * mask).sum(-1)).sum() / n


class Critic(nn.Module):
    """Q_1,2(s, a) and V_1,2(s): the policy's backbone (copied) + two MLP heads of two outputs."""

    def __init__(self, policy):
        super().__init__()
        h = policy.config.hidden_size
        self.body = copy.deepcopy(policy.base_model)
        self.q = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))
        self.v = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))

    def forward(self, ids: Tensor, am: Tensor, v_at: Tensor, q_at: Tensor) -> tuple[Tensor, Tensor]:
        """ids, am [N, T]; v_at / q_at [N]: positions of the last token of s / of a (before EOS) ->
        (q [N, 2], v [N, 2]). Causal attention: V reads s only."""
        hid = self.body(input_ids=ids, attention_mask=am, position_ids=position_ids(am)).last_hidden_state
        rows = torch.arange(len(ids), device=ids.device)
        return self.q(hid[rows, q_at]).float(), self.v(hid[rows, v_at]).float()


@torch.no_grad()
def play(model, tok, task, problems: list, max_new_tokens: int, temperature: float = 1.0,
         greedy: bool = False, max_turns: int = 32, cache: str | None = None) -> list[list[dict]]:
    """Multi-turn rollouts: one `sample` call per turn over the unfinished games, the dialogue so
    far as the prompt. -> per game, its turns {obs, action, reward, next_obs, done}."""
    dialogue = [task.start(p) for p in problems]
    games: list[list[dict]] = [[] for _ in problems]
    live = list(range(len(problems)))
    for _ in range(max_turns):
        if not live:
            break
        ro = sample(model, tok, [dialogue[i] for i in live], max_new_tokens, temperature,
                    greedy=greedy, cache_implementation=cache)
        for i, a in zip(live, ro.completions, strict=True):
            nxt, r, done = task.turn(problems[i], dialogue[i], a)
            games[i].append(dict(obs=dialogue[i], action=a, reward=float(r), next_obs=nxt, done=bool(done)))
            dialogue[i] = nxt
        live = [i for i in live if not games[i][-1]["done"]]
    return games


def success(task, problems: list, games: list[list[dict]]) -> float:
    """Fraction of games whose last utterance is right (the task's single-turn reward)."""
    return sum(task.reward(p, g[-1]["action"]) > 0 for p, g in zip(problems, games, strict=True)) / len(games)


class Algo:
    def __init__(self, model, tok, task, cfg: Config, seed: int = 0):
        self.tok, self.task, self.cfg, self.seed = tok, task, cfg, seed
        self.policy, critic = model, Critic(model)
        target = copy.deepcopy(critic).requires_grad_(False)  # in module: checkpointed, not optimised
        self.module = nn.ModuleDict({"policy": model, "critic": critic, "target": target})
        self.buffer: list[dict] = []  # replayed turns, oldest first (FIFO of `capacity`)

    def _critic_rows(self, obs: list[str], actions: list[str]) -> tuple[Batch, Tensor, Tensor]:
        """[s | a + EOS] and the positions that V (end of s) and Q (last token of a) read."""
        dev = next(self.policy.parameters()).device
        b = prompt_completion_batch(self.tok, obs, actions, dev)
        n_a = torch.tensor([len(a) for a in encode(self.tok, actions)], device=dev)
        P = b["input_ids"].shape[1] - int(n_a.max()) - 1  # prompt width
        return b, torch.full_like(n_a, P - 1), P + n_a - 1  # Q: a's last token ("" -> end of s)

    def _v(self, net, obs: list[str]) -> Tensor:
        ids, am = left_pad(encode(self.tok, obs, prompt=True), self.tok.pad_token_id,
                           next(self.policy.parameters()).device)
        at = torch.full((len(obs),), ids.shape[1] - 1, device=ids.device)
        return net(ids, am, at, at)[1]

    @torch.no_grad()
    def collect(self, step: int) -> tuple[Batch, dict[str, float]]:
        c, rng = self.cfg, step_rng(self.seed, step)
        critic, target = self.module["critic"], self.module["target"]
        if step > 0:  # Polyak update after the previous step's critic update
            for pb, p in zip(target.parameters(), critic.parameters(), strict=True):
                pb.mul_(1 - c.tau).add_(p, alpha=c.tau)
        problems = self.task.prompts(c.episodes, rng)
        games = play(self.policy, self.tok, self.task, problems, c.max_new_tokens, c.temperature,
                     max_turns=c.max_turns, cache=c.sampler_cache)
        self.buffer = (self.buffer + [t for g in games for t in g])[-c.capacity:]
        turns = [self.buffer[rng.randrange(len(self.buffer))] for _ in range(c.batch_size)]
        obs = [t["obs"] for t in turns]
        # the critic's rows: the replayed (s, a); targets from the target critic
        b, v_at, q_at = self._critic_rows(obs, [t["action"] for t in turns])
        dev = b["input_ids"].device
        reward = torch.tensor([t["reward"] for t in turns], device=dev)
        done = torch.tensor([float(t["done"]) for t in turns], device=dev)
        # a fresh utterance of pi at each replayed s: V's target and the actor's rows
        ro = sample(self.policy, self.tok, obs, c.max_new_tokens, c.temperature,
                    cache_implementation=c.sampler_cache)
        last = (ro.mask * torch.arange(ro.mask.shape[1], device=dev)).argmax(-1) + 1  # [N] a's last token
        last = last - (ro.input_ids.gather(1, last[:, None])[:, 0] == self.tok.eos_token_id).long()  # not EOS
        pv_at = torch.full_like(last, ro.prompt_len - 1)
        q_bar_pi = target(ro.input_ids, ro.attention_mask, pv_at, last)[0]  # Qbar_k(s, a~pi) [N, 2]
        y_q, y_v = critic_targets(reward, done, self._v(target, [t["next_obs"] for t in turns]),
                                  q_bar_pi, c.gamma)
        q_pi, v_s = critic(ro.input_ids, ro.attention_mask, pv_at, last)
        adv = advantage(q_pi, v_s)  # online critic, as the official actor step
        if c.whiten:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        batch = {"input_ids": ro.input_ids, "attention_mask": ro.attention_mask, "mask": ro.mask,
                 "advantages": adv, "actor_on": torch.full_like(adv, float(step >= c.actor_warmup)),
                 "c_ids": b["input_ids"], "c_am": b["attention_mask"], "c_v": v_at, "c_q": q_at,
                 "y_q": y_q, "y_v": y_v}
        ret = [sum(t["reward"] for t in g) for g in games]
        return batch, {"reward": sum(ret) / len(ret), "success": success(self.task, problems, games),
                       "turns": sum(map(len, games)) / len(games), "advantage": adv.mean().item(),
                       "q": q_pi.mean().item(), "buffer": float(len(self.buffer))}

    def loss(self, micro: Batch, totals: dict) -> tuple[Tensor, dict[str, float]]:
        c, n = self.cfg, totals["rows"]
        q, v = self.module["critic"](micro["c_ids"], micro["c_am"], micro["c_v"], micro["c_q"])
        lc = critic_loss(q, v, micro["y_q"], micro["y_v"], total_rows=n)
        logp = sequence_logprobs(self.policy, micro["input_ids"], micro["attention_mask"], c.temperature)
        la = actor_loss(logp, micro["mask"], micro["advantages"] * micro["actor_on"], total_rows=n)
        return la + c.critic_coef * lc, {"actor_loss": la.item(), "critic_loss": lc.item()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Greedy multi-turn games on the task's splits: success rate and mean turns."""
        out = {}
        for split, key in (("in_distribution", ""), ("out_of_distribution", "ood_")):
            probs = self.task.eval_sets.get(split) or []
            if probs:
                games = play(self.policy, self.tok, self.task, probs, self.cfg.max_new_tokens,
                             greedy=True, max_turns=self.cfg.max_turns)
                out[f"{key}success_rate"] = success(self.task, probs, games)
                out[f"{key}mean_turns"] = sum(map(len, games)) / len(games)
        return out

    def extra_state(self) -> dict:
        return {"buffer": self.buffer}

    def load_extra_state(self, state: dict) -> None:
        self.buffer = list(state.get("buffer", []))
