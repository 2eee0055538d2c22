"""agent.py — Fig. 1C, exploration: APT's particle-based entropy reward, SAC, a replay buffer.

The agent acts in the latent space of the generator (world.py) and is rewarded for visiting *new*
parts of the representation space: the APT reward (Liu & Abbeel 2021, "Behavior From the Void") is
the log of the mean distance from each feature vector to its k nearest neighbours in the batch. SAC
(Haarnoja et al. 2018) maximises it. The features come from the encoder that pretrain.py trains with
its own contrastive loss; here they are always detached: RL never updates the encoder (Fig. 1C).

    apt_reward(features, k, knn_mean) -> (B,)  kNN particle reward, O(B^2 D) time
    SAC(feature_dim, action_dim, cfg)          tanh-Gaussian actor, twin Q, temperature alpha
    ReplayBuffer(capacity, action_dim)         circular, preallocated, uint8 frames: 6.4 KB each
"""
import copy, math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- APT: a particle-based entropy estimate in representation space ------------------------------
class RunningMean:
    """The running mean of a stream of batches: APT's normaliser of kNN distances (URLB's RMS, whose
    variance APT never reads). It starts at 0 with a tiny pseudo-count: the first batch sets it."""

    def __init__(self, device="cpu", eps: float = 1e-4):
        self.mean, self.count = torch.zeros((), device=device), eps  # (), pseudo-count

    def update(self, x: torch.Tensor) -> torch.Tensor:
        """Fold x (N,) in -> the running mean ()."""
        self.count += len(x)
        self.mean = self.mean + (x.mean() - self.mean) * len(x) / self.count
        return self.mean


@torch.no_grad()
def knn_distances(features: torch.Tensor, k: int) -> torch.Tensor:
    """features (B, D) -> (B, k): each row's distances to its k nearest OTHER rows. A point is not
    its own neighbour: the diagonal is +inf (exact, unlike dropping the smallest of topk(k + 1))."""
    dist = torch.cdist(features, features)  # (B, B) pairwise Euclidean distances
    dist.fill_diagonal_(float("inf"))
    return dist.topk(k, dim=1, largest=False).values  # (B, k)


@torch.no_grad()
def apt_reward(features: torch.Tensor, k: int, knn_mean: RunningMean | None = None):
    """APT (Liu & Abbeel 2021) Eq. 6 with URLB's knn_avg: r_i = log(1 + mean_j ||f_i - f_(j)||) over
    the k nearest neighbours f_(j) of f_i in the batch. features (B, D) -> rewards (B,). With
    knn_mean, each distance is first divided by the running mean of all kNN distances (URLB)."""
    assert features.dim() == 2 and 1 <= k < len(features), "need (B, D) features and 1 <= k < B"
    knn = knn_distances(features, k)  # (B, k)
    if knn_mean is not None:
        knn = knn / knn_mean.update(knn.reshape(-1)).clamp_min(1e-8)  # knn.reshape(-1): (B k,)
    return torch.log1p(knn.mean(dim=1))  # (B,)  APT Eq. 6, c = 1


def knn_spread(features: torch.Tensor, k: int) -> torch.Tensor:
    """APT's statistic without log or normaliser: the mean distance from each row of features (B, D)
    to its k nearest other rows, a () tensor. Its ratio compares how spread out two sets are."""
    return knn_distances(features, k).mean()


# ---- SAC -----------------------------------------------------------------------------------------
@dataclass
class SACConfig:
    """SAC's coefficients. Palm-up's defaults, left open by the paper: docs/exploration.md."""
    hidden: int = 128  # width of the two hidden layers (CleanRL sac_continuous_action.py: 256)
    lr_actor: float = 3e-4  # Adam lr of the actor (CleanRL policy_lr)
    lr_critic: float = 1e-3  # Adam lr of both critics (CleanRL q_lr)
    lr_alpha: float = 1e-3  # Adam lr of log alpha, with autotune (CleanRL reuses q_lr)
    gamma: float = 0.5  # discount in [0, 1): APT rewards the next frame (CleanRL: 0.99)
    tau: float = 0.005  # Polyak rate of the target critics (CleanRL)
    alpha: float = 0.1  # temperature, fixed as in SAC-v1 (DrQ / URLB's init); 0 = no entropy bonus
    autotune: bool = False  # learn alpha toward entropy -|A| (SAC-v2); in the world: collapses
    target_entropy_scale: float = 1.0  # with autotune: target entropy = -scale |A| (SAC-v2)
    log_std_min: float = -5.0  # lower bound of the actor's log std (CleanRL LOG_STD_MIN)
    log_std_max: float = 2.0  # upper bound of the actor's log std (CleanRL LOG_STD_MAX)
    policy_frequency: int = 2  # actor (and alpha) steps every this many critic steps (CleanRL)
    reward_norm: bool = True  # standardise each batch's rewards (SAC-v1: reward scale is its knob)
    updates: int = 2  # SAC steps per call on the same batch: update-to-data ratio (REDQ / DroQ: 20)

    def rules(self) -> dict:
        lrs = (self.lr_actor, self.lr_critic, self.lr_alpha)
        return {"hidden >= 1": self.hidden >= 1,
                "learning rates in (0, inf)": all(0 < v < math.inf for v in lrs),
                "0 <= gamma < 1": 0 <= self.gamma < 1, "0 < tau <= 1": 0 < self.tau <= 1,
                "0 <= alpha < inf": 0 <= self.alpha < math.inf,
                "finite target_entropy_scale": math.isfinite(self.target_entropy_scale),
                "-inf < log_std_min < log_std_max < inf":
                    -math.inf < self.log_std_min < self.log_std_max < math.inf,
                "policy_frequency >= 1": self.policy_frequency >= 1,
                "updates >= 1": self.updates >= 1}


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:  # two hidden layers (CleanRL)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


class SAC(nn.Module):
    """Soft actor-critic (Haarnoja et al. 2018) on detached features, actions in [-1, 1]^A."""

    def __init__(self, feature_dim: int, action_dim: int, cfg: SACConfig = SACConfig(),
                 device="cpu"):
        super().__init__()
        self.cfg, self.action_dim = cfg, action_dim
        self.actor = mlp(feature_dim, cfg.hidden, 2 * action_dim)  # -> (B, 2A): mean, log std
        self.q1 = mlp(feature_dim + action_dim, cfg.hidden, 1)  # -> (B, 1)  twin critics, clipped
        self.q2 = mlp(feature_dim + action_dim, cfg.hidden, 1)  # -> (B, 1)  double Q (TD3)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.q1_target.requires_grad_(False)
        self.q2_target.requires_grad_(False)
        log_alpha = math.log(cfg.alpha) if cfg.alpha > 0 else -math.inf  # alpha 0: no entropy bonus
        self.log_alpha = nn.Parameter(torch.tensor(log_alpha))  # ()
        self.target_entropy = -cfg.target_entropy_scale * action_dim  # SAC-v2: -|A|
        self.to(device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr_actor)
        critics = [*self.q1.parameters(), *self.q2.parameters()]
        self.critic_opt = torch.optim.Adam(critics, lr=cfg.lr_critic)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr_alpha)
        self.num_steps = 0  # gradient steps of the critics so far
        self.last = {}  # tensors of the last step, read only on logged updates (diagnostics)

    def policy(self, f: torch.Tensor):
        """f (B, D) -> tanh-squashed sampled action (B, A), its log prob (B,), tanh(mean) (B, A)."""
        mean, log_std = self.actor(f).chunk(2, dim=-1)  # (B, A), (B, A)
        lo, hi = self.cfg.log_std_min, self.cfg.log_std_max
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(log_std) + 1)  # (B, A) soft clamp (CleanRL)
        noise = torch.randn_like(mean)  # (B, A)
        u = mean + log_std.exp() * noise  # (B, A) reparameterisation (SAC Eq. 11)
        logp = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)  # (B,) Normal
        # minus log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)): SAC Eq. 26, in Spinning Up's
        # numerically stable form
        logp = logp - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)  # (B,)
        return torch.tanh(u), logp, torch.tanh(mean)

    @torch.no_grad()
    def act(self, features: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """features (B, D) -> actions (B, A) in [-1, 1]; deterministic: tanh(mean)."""
        action, _, mean_action = self.policy(features)
        return mean_action if deterministic else action

    def q(self, q1, q2, f, a):
        fa = torch.cat([f, a], dim=-1)  # (B, D + A)
        return q1(fa).squeeze(-1), q2(fa).squeeze(-1)  # (B,), (B,)

    def update(self, f, a, r, f2) -> dict:
        """cfg.updates SAC steps on one batch: features (B, D), actions (B, A), rewards (B,), next
        features (B, D), all detached -> () tensors of the last step (read on logged updates)."""
        if self.cfg.reward_norm:  # one scale for the critic, whatever APT's (it moves with f)
            r = (r - r.mean()) / r.std().clamp_min(1e-8)  # (B,)
        for _ in range(self.cfg.updates):
            self.step(f, a, r, f2)
        return {k: self.last[k] for k in ("critic_loss", "actor_loss", "alpha", "entropy", "q")}

    def step(self, f, a, r, f2) -> None:
        cfg = self.cfg
        alpha = self.log_alpha.exp().detach()  # ()
        # Critic: soft Bellman residual (SAC Eq. 5) with clipped double-Q targets. The world has no
        # terminal states (episodes end by a time limit), so it ALWAYS bootstraps: no done mask.
        with torch.no_grad():
            a2, logp2, _ = self.policy(f2)  # (B, A), (B,)
            q1_t, q2_t = self.q(self.q1_target, self.q2_target, f2, a2)  # (B,), (B,)
            target = r + cfg.gamma * (torch.min(q1_t, q2_t) - alpha * logp2)  # (B,) SAC Eq. 3
        q1, q2 = self.q(self.q1, self.q2, f, a)  # (B,), (B,)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # Actor and temperature: delayed, but as many steps as skipped (CleanRL policy_frequency).
        if self.num_steps % cfg.policy_frequency == 0:
            for _ in range(cfg.policy_frequency):
                a_pi, logp, _ = self.policy(f)  # (B, A), (B,)
                q_pi = torch.min(*self.q(self.q1, self.q2, f, a_pi))  # (B,)
                actor_loss = (alpha * logp - q_pi).mean()  # SAC Eq. 12 (reparameterised)
                self.actor_opt.zero_grad(set_to_none=True)
                actor_loss.backward()  # grads in q1, q2 too: the next critic step clears them
                self.actor_opt.step()
                if cfg.autotune:  # SAC-v2 Eq. 18: J(alpha) = E[-alpha (log pi + target entropy)]
                    entropy_error = logp.detach() + self.target_entropy  # (B,)
                    alpha_loss = -(self.log_alpha.exp() * entropy_error).mean()
                    self.alpha_opt.zero_grad(set_to_none=True)
                    alpha_loss.backward()
                    self.alpha_opt.step()
                    alpha = self.log_alpha.exp().detach()
                self.last.update(actor_loss=actor_loss.detach(), alpha=alpha,
                                 entropy=-logp.detach().mean(), policy_action=a_pi.detach())

        with torch.no_grad():  # Polyak averaging, target <- (1 - tau) target + tau online (Alg. 1)
            for net, target_net in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                for p, p_t in zip(net.parameters(), target_net.parameters()):
                    p_t.lerp_(p, cfg.tau)
        self.num_steps += 1
        self.last.update(critic_loss=critic_loss.detach(), q=q1.detach().mean(), q_all=q1.detach(),
                         target=target, action=a, reward=r)

    def diagnostics(self) -> dict:
        """Is SAC learning its task? () tensors from the last step (logged updates only):
        entropy_gap  entropy - |A| ln 2: 0 for the uniform policy on [-1, 1]^A, < 0 when it commits
        abs_action   mean |a| of the policy's actions on the batch's states (0.5 if uniform)
        critic_r2    1 - MSE(Q, target) / Var(target): the share of the target the critic explains
        reward_action_r2  adjusted R^2 of the reward's least-squares fit on a and ||a||^2 / A:
                     the share of its variance the action explains (nan unless B > A + 2)"""
        s = self.last
        a, r = s["action"], s["reward"]  # (B, A), (B,)
        B, A = a.shape
        X = torch.cat([a.new_ones(B, 1), a, a.pow(2).mean(1, keepdim=True)], 1)  # (B, A + 2)
        ok = torch.isfinite(X).all() & torch.isfinite(r).all()  # diverged: nan, not an error
        X, r = X.nan_to_num(0, 0, 0), r.nan_to_num(0, 0, 0)
        fit = torch.linalg.lstsq(X.cpu(), r.cpu()[:, None]).solution.to(a.device)  # (A + 2, 1)
        residual = r - (X @ fit).squeeze(1)  # (B,)
        r2 = 1 - residual.pow(2).sum() / (r - r.mean()).pow(2).sum().clamp_min(1e-12)
        adjusted = 1 - (1 - r2) * (B - 1) / (B - A - 2) if B > A + 2 else r2 * math.nan
        adjusted = torch.where(ok, adjusted, math.nan)
        critic_error = (s["q_all"] - s["target"]).pow(2).mean()
        return {"entropy_gap": s["entropy"] - A * math.log(2),
                "abs_action": s["policy_action"].abs().mean(),
                "critic_r2": 1 - critic_error / s["target"].var().clamp_min(1e-12),
                "reward_action_r2": adjusted}


# ---- the replay buffer ---------------------------------------------------------------------------
class ReplayBuffer:
    """Circular buffer of (obs uint8 (3, S, S), action (A,), next_obs uint8 (3, S, S), class),
    preallocated on `device`. Pixels stay uint8; the caller converts sampled frames to float. The
    class lets tests check that (obs, next_obs) pairs never cross episodes."""

    def __init__(self, capacity: int, action_dim: int, obs_shape=(3, 32, 32), device="cpu"):
        self.capacity, self.ptr, self.size = capacity, 0, 0  # next slot to write, valid transitions
        # torch.empty: only [:size] is ever read; on the CPU never-filled slots cost no memory
        self.obs = torch.empty((capacity, *obs_shape), dtype=torch.uint8, device=device)
        # self.obs: (C, 3, S, S)
        self.next_obs = torch.empty_like(self.obs)  # (C, 3, S, S)
        self.action = torch.empty((capacity, action_dim), device=device)  # (C, A)
        self.label = torch.empty(capacity, dtype=torch.int64, device=device)  # (C,)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, next_obs, label) -> None:
        """N transitions, one per env: obs, next_obs uint8 (N, 3, S, S), action (N, A), label (N,)
        """
        n = len(obs)
        assert n <= self.capacity
        idx = (self.ptr + torch.arange(n, device=self.obs.device)) % self.capacity  # (N,) wraps
        self.obs[idx], self.next_obs[idx] = obs, next_obs
        self.action[idx], self.label[idx] = action, label
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict:
        """Uniformly, with replacement -> obs, next_obs uint8 (B, 3, S, S), action (B, A), label"""
        device = generator.device if generator is not None else self.obs.device
        idx = torch.randint(self.size, (batch_size,), generator=generator, device=device)  # (B,)
        idx = idx.to(self.obs.device)
        return dict(obs=self.obs[idx], action=self.action[idx], next_obs=self.next_obs[idx],
                    label=self.label[idx])
