"""Exercise 3 — the world's transition (paper Fig. 1B: latent dynamics on a pretrained generator).

The world is the latent space of a pretrained class-conditional generator G(z, y). An episode
holds a class "prompt" y fixed and moves the latent z; the agent's action a (one number per latent
dimension, in [-1, 1]) pushes z, a fresh random latent eps keeps the world stochastic, and an
exponential moving average (EMA) makes consecutive frames persist. Write one step of it, for N
environments at once:

  1. mix:     m  = w * s * a + sqrt(1 - w^2) * eps        w = `mix`, s = `action_scale`,
                                                          eps ~ N(0, I)
  2. EMA:     z' = rho * z + g * m                        rho = `ema`, and the gain g is yours to
              derive: choose g so that z' ~ N(0, I) whenever z ~ N(0, I) and
              a ~ Uniform[-1, 1]^d, i.e. the latents stay where G was trained. (Hint:
              Var(s * a) = s^2 / 3 = 1 for s = sqrt(3), so Var(m) = 1; z and m are independent;
              what must g be for Var(z') = 1?)
  3. decode:  o' = G(z', y)                               an image batch (N, 3, 32, 32) in [-1, 1]

Read first: world.py's module docstring and `LatentWorld.step`, which calls this transition between
drawing eps and handling the end of an episode.

Then: `python exercises/check.py 3` (a few seconds) replays world.py step by step with the same
random seed against your transition, and measures the stationary variance of z under uniform
random actions.
"""
import torch


def transition(G, z: torch.Tensor, y: torch.Tensor, action: torch.Tensor, eps: torch.Tensor,
               mix: float, ema: float, action_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """z (N, d), y (N,) long, action (N, d) in [-1, 1], eps (N, d) -> (z_next (N, d), obs_next
    (N, 3, 32, 32))."""
    # your code here: about 4 lines
    raise NotImplementedError("transition is not written yet: mix the action with eps, apply the "
                              "variance-preserving EMA to z, and decode the new latent with "
                              "G(z_next, y)")
