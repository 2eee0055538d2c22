"""Exercise 2 — the APT particle reward (paper Fig. 1C: exploration; APT, Liu & Abbeel 2021, Eq. 6).

The exploring agent is rewarded for reaching parts of the representation space where the batch is
sparse. APT estimates the entropy of the feature distribution with k nearest neighbours
("particles"): a frame whose features are far from their k nearest neighbours in the batch is in a
sparse region and earns a high reward.

Write `apt_reward` (URLB's variant with knn_avg = True and c = 1):
    r_i = log(1 + mean_{j in kNN(i)} ||f_i - f_j||)   Euclidean distance, mean over the k neighbours
  * the k nearest neighbours of f_i are taken among the OTHER rows of the batch or among all rows?
    Read the docstring of agent.knn_distances (agent.py), which agent.apt_reward calls, and do
    what it does — the checker tests it, duplicates included;
  * the reward is a number for RL, not a loss: it must carry no gradient back to the encoder
    (Fig. 1C, "representation detached"): use @torch.no_grad() or .detach().
Useful: torch.cdist, Tensor.topk(k, largest=False), Tensor.fill_diagonal_, torch.log1p.
(Leave out agent.apt_reward's optional normaliser, the running mean of the kNN distances; it is a
refinement of the same quantity.)

Then: `python exercises/check.py 2` (a few seconds).
"""
import torch


def apt_reward(features: torch.Tensor, k: int = 12) -> torch.Tensor:
    """features (B, D) -> rewards (B,): log(1 + mean distance from each row to its k nearest
    neighbours)."""
    # your code here: about 5 lines
    raise NotImplementedError("apt_reward is not written yet: pairwise distances (B, B), the k "
                              "smallest per row (does a row count as its own neighbour? see "
                              "agent.knn_distances), log(1 + their mean)")
