"""agent.py — Fig. 1C: the exploring agent. APT's particle-based entropy reward + SAC + a uint8 replay buffer.

The agent of "Palm up" (NeurIPS 2022) acts in the latent space of a pretrained generator (world.py). It is
rewarded for visiting *new* parts of the representation space: the APT reward (Liu & Abbeel 2021, "Behavior
From the Void") is the log of the mean distance from each feature vector to its k nearest neighbours in the
batch. SAC (Haarnoja et al. 2018) maximises it. The features come from the encoder that pretrain.py trains
with its own (contrastive) loss; here they are always detached, so RL never updates the encoder (Fig. 1C:
"with representation detached").

    apt_reward(features, k=12, rms=None) -> (B,)           kNN particle reward, O(B^2 D) time, O(B^2) memory
    SAC(feature_dim, action_dim, cfg).act / .update        tanh-Gaussian actor, twin Q, learned temperature
    ReplayBuffer(capacity, action_dim)                     circular, preallocated, uint8 frames + int64 labels

Typical use (pretrain.py): per step, sample a batch, encode obs and next_obs, r = apt_reward(next_features,
k, rms) on that batch (URLB computes APT on the next observation's representation), then sac.update(...).

Replay memory: one transition = 2 * 3*32*32 = 6144 B of uint8 frames + 4*A B of float32 action + 8 B label.
With A = 64 (the generator's latent size) that is 6408 B: 100k transitions = 0.64 GB, 1M = 6.4 GB (float32
frames would be 4x that). Frames, not latents, are stored: sampling and converting stored frames is far cheaper
than re-decoding them with the generator (`python benchmarks/apt_cost.py` measures both; docs/performance.md).
"""
import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import require


# ----------------------------------------------------------------------------------------------------
# APT reward: particle-based entropy estimate in representation space
# ----------------------------------------------------------------------------------------------------
class RMS:
    """Running mean / variance of a stream of batches, updated in place (parallel update of Chan et al. 1979).
    Like URLB's utils.RMS it starts at mean 0, var 1 with a tiny pseudo-count, so the first batch sets it."""

    def __init__(self, shape=(), eps: float = 1e-4, device="cpu"):
        self.mean = torch.zeros(shape, device=device)  # (*shape)
        self.var = torch.ones(shape, device=device)  # (*shape)
        self.count = eps  # pseudo-count of the prior (mean 0, var 1)

    def update(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, *shape) -> (running mean, running std) after folding x in."""
        n = x.shape[0]
        mean, var = self.mean.to(x), self.var.to(x)
        batch_mean, batch_var = x.mean(0), x.var(0, unbiased=False)  # (*shape), (*shape)
        delta, total = batch_mean - mean, self.count + n
        self.mean = mean + delta * n / total
        self.var = (var * self.count + batch_var * n + delta ** 2 * self.count * n / total) / total
        self.count = total
        return self.mean, self.var.sqrt()

    def state(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load(self, s: dict) -> None:
        self.mean, self.var, self.count = s["mean"], s["var"], s["count"]


@torch.no_grad()
def knn_distances(features: torch.Tensor, k: int) -> torch.Tensor:
    """features (B, D) -> (B, k): each row's distances to its k nearest OTHER rows. A point is not its own neighbour:
    the diagonal is set to +inf (URLB instead keeps the 0 self-distance as one of its k). Masking is exact, unlike
    dropping the smallest of topk(k+1): cdist's matmul path can give the self-distance a small non-zero value and
    duplicates can tie with it."""
    f = features.detach()
    dist = torch.cdist(f, f)  # (B, B) pairwise Euclidean distances
    dist.fill_diagonal_(float("inf"))
    return dist.topk(k, dim=1, largest=False).values  # (B, k)


@torch.no_grad()
def apt_reward(features: torch.Tensor, k: int = 12, rms: RMS | None = None) -> torch.Tensor:
    """APT reward (Liu & Abbeel 2021, Eq. 6 with URLB's knn_avg=True): r_i = log(1 + mean_j ||f_i - f_(j)||),
    the mean over the k nearest neighbours f_(j) of f_i in the batch. features (B, D) -> rewards (B,).
    With `rms`, each distance is first divided by the running mean of all kNN distances (URLB's PBE, knn_rms)."""
    if features.dim() != 2:
        raise ValueError(f"apt_reward: features must be (B, D), got shape {tuple(features.shape)}")
    B = features.shape[0]
    if not 1 <= k < B:
        raise ValueError(f"apt_reward: need 1 <= k < B (the point itself is excluded), got k={k}, B={B}")
    if not torch.isfinite(features).all():
        raise ValueError("apt_reward: features contain NaN or inf")
    knn = knn_distances(features, k)  # (B, k)
    if rms is not None:  # URLB PBE: normalise by the running mean of all B*k kNN distances, updated first
        mean, _ = rms.update(knn.reshape(-1))  # knn.reshape(-1): (B*k,)
        knn = knn / mean.clamp_min(1e-8)
    return torch.log1p(knn.mean(dim=1))  # (B,)  APT (Liu & Abbeel 2021) Eq. 6, c = 1


def knn_spread(features: torch.Tensor, k: int = 12) -> float:
    """How spread out a set of points is, APT's statistic: the mean distance from each row of features (B, D) to
    its k nearest other rows (no log, no normaliser: ratios of it compare two sets of B points)."""
    return knn_distances(features, k).mean().item()


# ----------------------------------------------------------------------------------------------------
# SAC
# ----------------------------------------------------------------------------------------------------
@dataclass
class SACConfig:
    hidden: int = 256  # width of the two hidden layers of actor and critics (CleanRL sac_continuous_action.py default)
    lr_actor: float = 3e-4  # Adam lr of the actor (CleanRL policy_lr default)
    lr_critic: float = 1e-3  # Adam lr of both Q networks (CleanRL q_lr default)
    lr_alpha: float = 1e-3  # Adam lr of log(alpha) (CleanRL reuses q_lr)
    gamma: float = 0.99  # discount (CleanRL default); set 0 for one-step bandits
    tau: float = 0.005  # Polyak rate of the target critics (CleanRL default)
    init_alpha: float = 0.1  # initial temperature (DrQ / Yarats' pytorch_sac init_temperature; CleanRL starts at 1.0,
    #                          too large here: with |A| = 64 the entropy bonus would swamp an APT reward of ~1);
    #                          0 = no entropy bonus (log alpha = -inf: autotune cannot move it)
    autotune: bool = True  # learn alpha so that entropy -> target (Haarnoja et al. 2018b, SAC-v2 Eq. 18)
    target_entropy_scale: float = 1.0  # target entropy = -scale * |A| (Haarnoja et al. 2018b heuristic: -|A|)
    log_std_min: float = -5.0  # lower bound of the actor's log std (CleanRL LOG_STD_MIN)
    log_std_max: float = 2.0  # upper bound of the actor's log std (CleanRL LOG_STD_MAX)
    policy_frequency: int = 2  # actor+alpha are updated every this many calls, that many times (CleanRL, TD3-style)
    target_network_frequency: int = 1  # Polyak update every this many calls (CleanRL default)
    reward_norm: bool = False  # standardise each batch's rewards to mean 0, std 1 before the Bellman target
    #                            (paper leaves it open; pretrain.py sets it, chosen by measurement: docs/exploration.md)
    updates_per_call: int = 1  # gradient steps (critic, actor, alpha, Polyak) per update() call on the same batch,
    #                            the update-to-data ratio (paper leaves it open; REDQ / DroQ raise it to 20)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """The range of every field (ConfigError otherwise); SAC() checks again, for fields set after construction."""
        lr = {f"0 < {k} < inf": 0 < getattr(self, k) < math.inf for k in ("lr_actor", "lr_critic", "lr_alpha")}
        require({"hidden >= 1": self.hidden >= 1, **lr, "0 <= gamma < 1": 0 <= self.gamma < 1,
                 "0 < tau <= 1": 0 < self.tau <= 1, "0 <= init_alpha < inf": 0 <= self.init_alpha < math.inf,
                 "a finite target_entropy_scale": math.isfinite(self.target_entropy_scale),
                 "-inf < log_std_min < log_std_max < inf": -math.inf < self.log_std_min < self.log_std_max < math.inf,
                 "policy_frequency >= 1": self.policy_frequency >= 1,
                 "target_network_frequency >= 1": self.target_network_frequency >= 1,
                 "updates_per_call >= 1": self.updates_per_call >= 1}, "SAC")


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


class SAC(nn.Module):
    """Soft actor-critic (Haarnoja et al. 2018) on detached encoder features, actions in [-1, 1]^A."""

    def __init__(self, feature_dim: int, action_dim: int, cfg: SACConfig = SACConfig(), device="cpu"):
        super().__init__()
        cfg.check()
        self.cfg, self.action_dim, self.device = cfg, action_dim, torch.device(device)
        self.actor = mlp(feature_dim, cfg.hidden, 2 * action_dim)  # -> (B, 2A): mean, pre-squash log std
        self.q1 = mlp(feature_dim + action_dim, cfg.hidden, 1)  # -> (B, 1)  twin critics: clipped double-Q
        self.q2 = mlp(feature_dim + action_dim, cfg.hidden, 1)  # -> (B, 1)  (Fujimoto et al. 2018, TD3)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.q1_target.requires_grad_(False)
        self.q2_target.requires_grad_(False)
        log_alpha = math.log(cfg.init_alpha) if cfg.init_alpha > 0 else -math.inf  # alpha = 0: no entropy bonus
        self.log_alpha = nn.Parameter(torch.tensor(log_alpha))  # () learned temperature
        self.target_entropy = -cfg.target_entropy_scale * action_dim  # SAC-v2: -|A|
        self.to(self.device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr_actor)
        self.critic_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=cfg.lr_critic)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr_alpha)
        self.num_updates = 0
        self.last_actor = torch.zeros(3, device=self.device)  # (actor_loss, alpha, entropy) of the last actor step
        self.last_action = torch.zeros(1, action_dim, device=self.device)  # (B, A) its actions (diagnostics)

    def state(self) -> dict:
        """Networks, the three optimisers and the counters: what a resumed run needs to take the same next step."""
        return {"nets": self.state_dict(), "updates": self.num_updates, "last": self.last_actor,
                "opts": [o.state_dict() for o in (self.actor_opt, self.critic_opt, self.alpha_opt)]}

    def load(self, s: dict) -> None:
        self.load_state_dict(s["nets"])
        self.num_updates, self.last_actor = s["updates"], s["last"]
        for opt, o in zip((self.actor_opt, self.critic_opt, self.alpha_opt), s["opts"]):
            opt.load_state_dict(o)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp().detach()  # ()

    def _policy(self, f: torch.Tensor):
        """f (B, D) -> (tanh-squashed sampled action (B, A), its log prob (B,), tanh(mean) (B, A))."""
        mean, log_std = self.actor(f).chunk(2, dim=-1)  # (B, A), (B, A)
        lo, hi = self.cfg.log_std_min, self.cfg.log_std_max
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(log_std) + 1)  # (B, A) soft clamp (CleanRL / pytorch_sac)
        u = mean + log_std.exp() * torch.randn_like(mean)  # (B, A) reparameterisation trick (SAC Eq. 11)
        logp = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1)  # (B,)
        # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)): the tanh Jacobian of SAC Eq. 26, Spinning Up's stable form
        logp = logp - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)  # (B,)
        return torch.tanh(u), logp, torch.tanh(mean)  # (B, A), (B,), (B, A)

    @torch.no_grad()
    def act(self, features: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """features (B, D) -> actions (B, A) in [-1, 1]; deterministic = tanh(mean)."""
        action, _, mean_action = self._policy(features.detach().to(self.device))
        return mean_action if deterministic else action  # (B, A)

    def _q(self, q1, q2, f, a):
        fa = torch.cat([f, a], dim=-1)  # (B, D + A)
        return q1(fa).squeeze(-1), q2(fa).squeeze(-1)  # (B,), (B,)

    def update(self, features, actions, rewards, next_features) -> dict:
        """One SAC step on a batch: features (B, D), actions (B, A), rewards (B,), next_features (B, D).
        Returns float metrics. Raises ValueError on bad shapes or non-finite inputs before touching any weight."""
        B = features.shape[0]
        shapes = dict(features=(B, features.shape[-1]), actions=(B, self.action_dim), rewards=(B,),
                      next_features=(B, features.shape[-1]))
        inputs = dict(features=features, actions=actions, rewards=rewards, next_features=next_features)
        for name, x in inputs.items():
            if tuple(x.shape) != shapes[name]:
                raise ValueError(f"SAC.update: {name} has shape {tuple(x.shape)}, expected {shapes[name]}")
        # Detach: RL losses must never reach the encoder that produced the features (paper Fig. 1C).
        f, a, r, f2 = (x.detach().to(self.device, torch.float32) for x in inputs.values())
        finite = torch.stack([torch.isfinite(x).all() for x in (f, a, r, f2)]).tolist()  # one device sync
        if not all(finite):
            bad = [name for name, ok in zip(inputs, finite) if not ok]
            raise ValueError(f"SAC.update: non-finite values (NaN/inf) in {bad}; no network was updated")
        if self.cfg.reward_norm:  # one scale for the critic whatever the reward's (APT's varies with the encoder)
            r = (r - r.mean()) / r.std().clamp_min(1e-8)  # (B,)
        for _ in range(self.cfg.updates_per_call):
            stats = self._step(f, a, r, f2)
        stats.update(sac_diagnostics(a, r, stats.pop("q_all"), stats.pop("y_all"), stats.pop("a_pi")),
                     entropy_gap=stats["entropy"] - self.action_dim * math.log(2))  # vs uniform on [-1, 1]^A
        return stats

    def _step(self, f, a, r, f2) -> dict:
        """One gradient step of critic, actor (delayed) and alpha on checked, detached tensors (update())."""
        cfg = self.cfg

        # Critic: soft Bellman residual (SAC Eq. 5) with clipped double-Q targets. The world has no terminal
        # states (episodes end only by a time limit), so we ALWAYS bootstrap: there is no done mask.
        with torch.no_grad():
            a2, logp2, _ = self._policy(f2)  # (B, A), (B,)
            q1_t, q2_t = self._q(self.q1_target, self.q2_target, f2, a2)  # (B,), (B,)
            y = r + cfg.gamma * (torch.min(q1_t, q2_t) - self.alpha * logp2)  # (B,)  SAC Eq. 3 (soft value)
        q1, q2 = self._q(self.q1, self.q2, f, a)  # (B,), (B,)
        critic_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)  # CleanRL sums the two critics' losses
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # Actor and temperature: delayed, but as many steps as skipped (CleanRL policy_frequency).
        if self.num_updates % cfg.policy_frequency == 0:
            for _ in range(cfg.policy_frequency):
                a_pi, logp, _ = self._policy(f)  # (B, A), (B,)
                q_pi = torch.min(*self._q(self.q1, self.q2, f, a_pi))  # (B,)
                actor_loss = (self.alpha * logp - q_pi).mean()  # SAC Eq. 12 (reparameterised)
                self.actor_opt.zero_grad(set_to_none=True)
                actor_loss.backward()  # also leaves grads in q1/q2; critic_opt.zero_grad clears them next call
                self.actor_opt.step()
                if cfg.autotune:
                    # SAC-v2 (Haarnoja et al. 2018b) Eq. 18: J(alpha) = E[-alpha (log pi + target entropy)]
                    alpha_loss = -(self.log_alpha.exp() * (logp.detach() + self.target_entropy)).mean()
                    self.alpha_opt.zero_grad(set_to_none=True)
                    alpha_loss.backward()
                    self.alpha_opt.step()
                self.last_actor = torch.stack([actor_loss.detach(), self.alpha, -logp.detach().mean()])  # (3,)
                self.last_action = a_pi.detach()  # (B, A) the policy's actions on the batch's states

        if self.num_updates % cfg.target_network_frequency == 0:
            with torch.no_grad():  # Polyak averaging: target <- (1 - tau) target + tau online (SAC, Alg. 1)
                for net, target in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                    for p, p_t in zip(net.parameters(), target.parameters()):
                        p_t.mul_(1 - cfg.tau).add_(p, alpha=cfg.tau)
        self.num_updates += 1
        stats = torch.cat([critic_loss.detach()[None], self.last_actor, q1.detach().mean()[None]])  # (5,)
        out = dict(zip(["critic_loss", "actor_loss", "alpha", "entropy", "q"], stats.tolist()))  # one sync
        return {**out, "q_all": q1.detach(), "y_all": y, "a_pi": self.last_action}


def sac_diagnostics(actions, rewards, q, target, policy_actions) -> dict:
    """Is SAC learning its task? (B,) / (B, A) tensors of one update -> floats:
    (SAC.update adds entropy_gap = entropy - |A| ln 2: 0 for a uniform policy on [-1, 1]^A, < 0 when it commits)
    abs_action   mean |a| of the policy's actions on the batch's states (0.5 for uniform actions)
    critic_r2    1 - MSE(Q, target) / Var(target): how much of the Bellman target the critic explains
    reward_action_r2  adjusted R^2 of a least-squares fit of the reward on the batch's actions and ||a||^2 / A:
                 the share of the reward's variance the action explains (about 0 when it explains nothing; nan
                 unless B > A + 2)"""
    B, A = actions.shape
    ones = torch.ones(B, 1, device=actions.device)
    X = torch.cat([ones, actions, actions.pow(2).mean(1, keepdim=True)], 1)  # (B, A + 2): intercept, a, ||a||^2 / A
    p = X.shape[1] - 1
    r = rewards - rewards.mean()  # (B,)
    resid = rewards - X @ torch.linalg.lstsq(X.cpu(), rewards.cpu()[:, None]).solution.to(X.device).squeeze(1)  # (B,)
    r2 = 1 - resid.pow(2).sum() / r.pow(2).sum().clamp_min(1e-12)
    adj = 1 - (1 - r2) * (B - 1) / (B - p - 1) if B > p + 1 else r2 * float("nan")  # needs more rows than inputs
    critic = 1 - (q - target).pow(2).mean() / target.var().clamp_min(1e-12)
    stats = torch.stack([policy_actions.abs().mean(), critic, adj])  # (3,)
    return dict(zip(["abs_action", "critic_r2", "reward_action_r2"], stats.tolist()))  # one sync


# ----------------------------------------------------------------------------------------------------
# Replay buffer
# ----------------------------------------------------------------------------------------------------
class ReplayBuffer:
    """Circular buffer of (obs uint8 (3,32,32), action float (A,), next_obs uint8, label int64), preallocated on
    `device`. Pixels stay uint8 (4x smaller than float32); the caller converts sampled frames to float.
    Memory: 2*3072 B + 4*A B + 8 B per transition, i.e. 6408 B for A = 64: 100k transitions = 0.64 GB,
    so each GB of (host or GPU) memory holds ~156k transitions.
    The label is the episode's class; tests use it to check that (obs, next_obs) pairs never cross episodes."""

    def __init__(self, capacity: int, action_dim: int, obs_shape=(3, 32, 32), device="cpu"):
        self.capacity, self.action_dim, self.obs_shape = capacity, action_dim, tuple(obs_shape)
        self.device = torch.device(device)
        # torch.empty, not zeros: only [:size] is ever read, and on the CPU the pages of slots a run never fills are
        # never touched, so they cost no memory (a default run fills 39k of its 100k slots: 0.25 GB, not 0.64 GB).
        self.obs = torch.empty((capacity, *self.obs_shape), dtype=torch.uint8, device=self.device)  # (N, 3, 32, 32)
        self.next_obs = torch.empty_like(self.obs)  # (N, 3, 32, 32)
        self.action = torch.empty((capacity, action_dim), dtype=torch.float32, device=self.device)  # (N, A)
        self.label = torch.empty(capacity, dtype=torch.int64, device=self.device)  # (N,)
        self.ptr, self.size = 0, 0  # next slot to write, number of valid transitions

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, next_obs, label) -> None:
        """Add N transitions at once (one per env): obs/next_obs uint8 (N, 3, 32, 32), action (N, A), label (N,)."""
        for name, x in (("obs", obs), ("next_obs", next_obs)):
            if x.dtype != torch.uint8:
                raise ValueError(f"ReplayBuffer.add: {name} must be uint8 pixels, got {x.dtype}")
            if tuple(x.shape[1:]) != self.obs_shape:
                raise ValueError(f"ReplayBuffer.add: {name} has shape {tuple(x.shape)}, "
                                 f"expected (N, *{self.obs_shape})")
        n = obs.shape[0]
        if not (next_obs.shape[0] == n and tuple(action.shape) == (n, self.action_dim) and tuple(label.shape) == (n,)):
            raise ValueError(f"ReplayBuffer.add: inconsistent batch: obs {tuple(obs.shape)}, action "
                             f"{tuple(action.shape)}, next_obs {tuple(next_obs.shape)}, label {tuple(label.shape)}")
        if n > self.capacity:
            raise ValueError(f"ReplayBuffer.add: {n} transitions do not fit a buffer of capacity {self.capacity}")
        idx = (self.ptr + torch.arange(n, device=self.device)) % self.capacity  # (N,) wraps around
        self.obs[idx] = obs.to(self.device)
        self.next_obs[idx] = next_obs.to(self.device)
        self.action[idx] = action.to(self.device, torch.float32)
        self.label[idx] = label.to(self.device, torch.int64)
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def state(self) -> dict:
        """The filled part only (cloned: a slice would save the whole preallocated storage)."""
        filled = {k: getattr(self, k)[:self.size].clone() for k in ("obs", "next_obs", "action", "label")}
        return {"ptr": self.ptr, "size": self.size, **filled}

    def load(self, s: dict) -> None:
        self.ptr, self.size = s["ptr"], s["size"]
        for k in ("obs", "next_obs", "action", "label"):
            getattr(self, k)[:self.size] = s[k]

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict:
        """Uniform with replacement -> dict(obs uint8 (B,3,32,32), action (B,A), next_obs uint8, label (B,))."""
        if self.size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        gen_device = generator.device if generator is not None else self.device
        idx = torch.randint(self.size, (batch_size,), generator=generator, device=gen_device).to(self.device)  # (B,)
        return dict(obs=self.obs[idx], action=self.action[idx], next_obs=self.next_obs[idx], label=self.label[idx])
