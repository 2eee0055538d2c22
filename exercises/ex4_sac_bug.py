"""Exercise 4 — find the bug in a SAC step (paper Fig. 1C: "representation detached").

In Palm-up two learners share one encoder: the contrastive loss trains it, and the SAC agent
(Haarnoja et al. 2018) only READS its features to act and to learn where to explore. The RL losses
must never reach the encoder.

`ExerciseSAC` below is agent.SAC with an update that encodes the frames itself, as pixel-based
agents (SAC-AE, DrQ) do: update(encoder, obs, actions, rewards, next_obs) runs cfg.updates SAC
steps, and each step(encoder, obs, actions, rewards, next_obs) encodes the frames it learns from.
It runs without an error and even learns a one-step task, but ONE realistic bug (a few lines) in
`step` lets the RL update leak into the encoder. The symptom: train it in a loop where the
encoder's own optimiser steps after every RL update, give the encoder no loss of its own — its
weights still drift.

Find and fix the bug in this file (do not edit agent.py). Compare ExerciseSAC.step with
agent.SAC.step line by line, and ask for every tensor computed from the encoder: does autograd keep
a path from it to a loss that RL backpropagates?

Then: `python exercises/check.py 4` (~10 s) checks that (1) the encoder receives no gradient and
does not move under 20 RL updates, (2) your step computes what agent.SAC.step computes (the same
critic target and the same networks after a step from the same weights and seed), and (3) your SAC
still learns a one-step task: the policy mean reaches the optimal action.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from agent import SAC


class ExerciseSAC(SAC):
    """agent.SAC whose update and step take the encoder and frames (networks, optimisers, policy
    and q unchanged)."""

    def update(self, encoder: nn.Module, obs: torch.Tensor, actions: torch.Tensor,
               rewards: torch.Tensor, next_obs: torch.Tensor) -> dict:
        """cfg.updates SAC steps on one batch: obs, next_obs (B, ...) encoder inputs, actions
        (B, A), rewards (B,) -> () tensors of the last step, as agent.SAC.update returns them."""
        a, r = actions.float(), rewards.float()  # (B, A), (B,)
        if self.cfg.reward_norm:  # one scale for the critic, whatever the reward's
            r = (r - r.mean()) / r.std().clamp_min(1e-8)  # (B,)
        for _ in range(self.cfg.updates):
            self.step(encoder, obs, a, r, next_obs)
        return {k: self.last[k] for k in ("critic_loss", "actor_loss", "alpha", "entropy", "q")}

    def step(self, encoder: nn.Module, obs: torch.Tensor, a: torch.Tensor, r: torch.Tensor,
             next_obs: torch.Tensor) -> None:
        """One SAC step on frames: critic, then the delayed actor (and alpha), then Polyak."""
        cfg = self.cfg
        alpha = self.log_alpha.exp().detach()  # ()
        with torch.no_grad():
            f = encoder(obs)  # (B, D) features of o_t: no gradient, RL never trains the encoder

        # Critic: soft Bellman target from the next frame (SAC Eq. 3), clipped double-Q, always
        # bootstrapped (the world has no terminal states)
        f2 = encoder(next_obs)  # (B, D) features of o_t+1
        a2, logp2, _ = self.policy(f2)  # (B, A), (B,) next action from the current policy
        q1_t, q2_t = self.q(self.q1_target, self.q2_target, f2, a2)  # (B,), (B,)
        target = r + cfg.gamma * (torch.min(q1_t, q2_t) - alpha * logp2)  # (B,) soft target
        q1, q2 = self.q(self.q1, self.q2, f, a)  # (B,), (B,)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)  # SAC Eq. 5
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # Actor and temperature: delayed, as many steps as skipped (CleanRL policy_frequency)
        if self.num_steps % cfg.policy_frequency == 0:
            for _ in range(cfg.policy_frequency):
                a_pi, logp, _ = self.policy(f)  # (B, A), (B,) reparameterised (SAC Eq. 11)
                q_pi = torch.min(*self.q(self.q1, self.q2, f, a_pi))  # (B,)
                actor_loss = (alpha * logp - q_pi).mean()  # SAC Eq. 12
                self.actor_opt.zero_grad(set_to_none=True)
                actor_loss.backward()
                self.actor_opt.step()
                if cfg.autotune:  # SAC-v2 Eq. 18: alpha follows the target entropy
                    entropy_error = logp.detach() + self.target_entropy  # (B,)
                    alpha_loss = -(self.log_alpha.exp() * entropy_error).mean()
                    self.alpha_opt.zero_grad(set_to_none=True)
                    alpha_loss.backward()
                    self.alpha_opt.step()
                    alpha = self.log_alpha.exp().detach()
                self.last.update(actor_loss=actor_loss.detach(), alpha=alpha,
                                 entropy=-logp.detach().mean(), policy_action=a_pi.detach())

        with torch.no_grad():  # Polyak averaging of the target critics
            for net, target_net in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                for p, p_t in zip(net.parameters(), target_net.parameters()):
                    p_t.lerp_(p, cfg.tau)
        self.num_steps += 1
        self.last.update(critic_loss=critic_loss.detach(), q=q1.detach().mean(),
                         q_all=q1.detach(), target=target, action=a, reward=r)
