"""Exercise 1 — the temporal InfoNCE loss (paper Fig. 1C: contrastive learning on consecutive
frames).

Palm-up learns its representation from pairs of consecutive frames (o_t, o_t+1) of the same
episode, with no augmentation. The encoder + projection head turn the B pairs of a batch into two
(B, P) tensors a and b, where row i of a and row i of b come from the same pair (a positive); every
other row is a negative.

Write `info_nce` (CPC, Oord et al. 2018; made symmetric as in CLIP, Radford et al. 2021):
  1. L2-normalise every row of a and of b (cosine similarity);
  2. logits[i, j] = <a_i, b_j> / temperature        (B, B): the positives sit on the diagonal;
  3. cross-entropy of each ROW of logits with target class i     (a_i must pick b_i out of all b_j),
     cross-entropy of each COLUMN with target class i            (b_i must pick a_i out of all a_j),
     and return the average of the two (a 0-dim tensor that autograd can differentiate).
For unrelated random rows the loss is about log(B); it falls as the encoder learns to match the
pairs.

Then: `python exercises/check.py 1` compares your loss with the project's on random tensors and
runs a short pretraining (~20-30 s) with YOUR loss plugged into pretrain.py.
"""
import torch
import torch.nn.functional as F  # noqa: F401  (F.normalize and F.cross_entropy are all you need)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """a, b: (B, P) projections, row i of a and row i of b a positive pair -> scalar loss (0-dim
    tensor)."""
    # your code here: about 4 lines
    raise NotImplementedError("info_nce is not written yet: normalise a and b, build the (B, B) "
                              "logits a @ b.T / temperature, and average the cross-entropy of "
                              "rows and of columns")
