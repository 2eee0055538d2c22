"""Exercise 4 — find the bug in a SAC update (paper Fig. 1C: "representation detached").

In Palm-up two learners share one encoder: the contrastive loss trains it, and the SAC agent (Haarnoja et al.
2018) only READS its features to act and to learn where to explore. The RL losses must never reach the encoder.

`ExerciseSAC` below is agent.SAC with an update that encodes the frames itself, as pixel-based agents
(SAC-AE, DrQ) do: update(encoder, obs, actions, rewards, next_obs). It runs without an error and even learns
a one-step task, but ONE realistic bug (a few lines) lets the RL update leak into the encoder. The symptom:
train it in a loop where the encoder's own optimiser steps after every RL update, give the encoder no loss of
its own — its weights still drift.

Find and fix the bug in this file (do not edit agent.py). Compare with agent.SAC.update line by line, and ask
for every tensor computed from the encoder: does autograd keep a path from it to a loss that RL backpropagates?

Then: `python exercises/check.py 4` (~10 s) checks that (1) the encoder receives no gradient and does not move
under 20 RL updates, and (2) your SAC still learns a one-step task: the policy mean reaches the optimal action.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from agent import SAC


class ExerciseSAC(SAC):
    """agent.SAC whose update takes frames and the encoder (networks, optimisers and _policy / _q unchanged)."""

    def update(self, encoder: nn.Module, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
               next_obs: torch.Tensor) -> dict:
        """One SAC step: obs, next_obs (B, ...) encoder inputs, actions (B, A), rewards (B,) -> float metrics."""
        cfg = self.cfg
        with torch.no_grad():
            f = encoder(obs)  # (B, D) features of o_t: no gradient, RL never trains the encoder (Fig. 1C)
        a, r = actions.float(), rewards.float()  # (B, A), (B,)

        # Critic: soft Bellman target from the next frame (SAC Eq. 3), clipped double-Q, always bootstrapped
        f2 = encoder(next_obs)  # (B, D) features of o_t+1
        a2, logp2, _ = self._policy(f2)  # (B, A), (B,) next action from the current policy
        q1_t, q2_t = self._q(self.q1_target, self.q2_target, f2, a2)  # (B,), (B,)
        y = r + cfg.gamma * (torch.min(q1_t, q2_t) - self.alpha * logp2)  # (B,) soft target
        q1, q2 = self._q(self.q1, self.q2, f, a)  # (B,), (B,)
        critic_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)  # soft Bellman residual (SAC Eq. 5)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # Actor and temperature: delayed, as many steps as skipped (CleanRL policy_frequency)
        if self.num_updates % cfg.policy_frequency == 0:
            for _ in range(cfg.policy_frequency):
                a_pi, logp, _ = self._policy(f)  # (B, A), (B,) reparameterised sample (SAC Eq. 11)
                q_pi = torch.min(*self._q(self.q1, self.q2, f, a_pi))  # (B,)
                actor_loss = (self.alpha * logp - q_pi).mean()  # SAC Eq. 12
                self.actor_opt.zero_grad(set_to_none=True)
                actor_loss.backward()
                self.actor_opt.step()
                if cfg.autotune:  # SAC-v2 Eq. 18: alpha follows the target entropy
                    alpha_loss = -(self.log_alpha.exp() * (logp.detach() + self.target_entropy)).mean()
                    self.alpha_opt.zero_grad(set_to_none=True)
                    alpha_loss.backward()
                    self.alpha_opt.step()
                self.last_actor = torch.stack([actor_loss.detach(), self.alpha, -logp.detach().mean()])  # (3,)

        if self.num_updates % cfg.target_network_frequency == 0:
            with torch.no_grad():  # Polyak averaging of the target critics
                for net, target in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                    for p, p_t in zip(net.parameters(), target.parameters()):
                        p_t.mul_(1 - cfg.tau).add_(p, alpha=cfg.tau)
        self.num_updates += 1
        stats = torch.cat([critic_loss.detach()[None], self.last_actor, q1.detach().mean()[None]])  # (5,)
        return dict(zip(["critic_loss", "actor_loss", "alpha", "entropy", "q"], stats.tolist()))
