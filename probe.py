"""probe.py — judging an encoder: frozen-feature probes on real labelled images.

Every encoder is frozen; its features on the real train split fit the probes, which are scored on
the real test split (or, to choose settings, on a fixed tenth of the train split):
  * linear: multinomial logistic regression on standardised features, trained to convergence with
    full-batch L-BFGS; the weight decay is picked on a validation split carved from the training
    set, then the probe is refit on the whole training set (SimCLR's / Kornblith et al. 2019's
    "linear evaluation");
  * kNN: cosine similarity, k = 20 neighbours, votes weighted by exp(sim / 0.07) (Wu et al. 2018).
pretrain.py finishes with split_probe; evaluate.py compares many runs with both probes.
"""
import torch
import torch.nn.functional as F

from data import to_float
from encoder import make_encoder

WEIGHT_DECAYS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)  # L2 grid, strongest first; chosen on a val split


def random_encoder(name: str = "cnn", width: int = 32, seed: int = 0):
    """Reference: a randomly initialised encoder (fixed seed; the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_encoder(name, width).eval().requires_grad_(False)


def extract_features(encoder, x_uint8, device="cpu", batch_size=256) -> torch.Tensor:
    """Frozen features of uint8 images (N, 3, 32, 32) -> float (N, D) on the CPU;
    encoder None = raw pixels."""
    if encoder is None:
        return to_float(x_uint8).flatten(1)  # (N, 3072)
    was_training = encoder.training
    f = torch.empty(len(x_uint8), encoder.feature_dim)  # (N, D), filled in place: no heap of chunks
    with torch.no_grad():
        encoder.eval()  # BatchNorm uses its running statistics
        for i in range(0, len(x_uint8), batch_size):
            f[i:i + batch_size] = encoder(to_float(x_uint8[i:i + batch_size].to(device))).cpu()
    encoder.train(was_training)  # pretrain.py may probe mid-training
    return f


# ---- The probes ----------------------------------------------------------------------------------
def _fit_logreg(f, y, num_classes, weight_decay, init=None, max_iter=300):
    """min_W,b  mean CE(W f + b, y) + wd/2 ||W||^2  by full-batch L-BFGS (deterministic)
    -> (W (C, D), b (C,)). Loss and gradient are written out by hand in a (C, N) layout: several
    times faster on a CPU than autograd."""
    fT, n = f.T, len(y)  # (D, N), a view: BLAS reads it transposed, no copy
    flat_y = y * n + torch.arange(n, device=f.device)  # (N,) index of (y_i, i) in a flat (C, N)
    W, b = ((torch.zeros(num_classes, f.shape[1], device=f.device),
             torch.zeros(num_classes, device=f.device))
            if init is None else (init[0].clone(), init[1].clone()))
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, history_size=20, tolerance_grad=1e-5,
                            tolerance_change=1e-8, line_search_fn="strong_wolfe")

    def closure():
        logp = (W @ fT + b[:, None]).log_softmax(0)  # (C, N)
        loss = -logp.view(-1)[flat_y].mean() + 0.5 * weight_decay * W.square().sum()
        grad = logp.exp_()  # softmax (C, N); d loss / d logits = (softmax - onehot) / N
        grad.view(-1)[flat_y] -= 1
        grad /= n
        W.grad, b.grad = grad @ f + weight_decay * W, grad.sum(1)  # (C, D), (C,)
        return loss

    opt.step(closure)
    return W, b


def _accuracy(f, y, Wb) -> float:
    return (f @ Wb[0].T + Wb[1]).argmax(1).eq(y).float().mean().item() if len(y) else float("nan")


def linear_probe_features(f_train, y_train, f_test, y_test, weight_decays=WEIGHT_DECAYS,
                          val_frac=0.1, max_iter=300, seed=0, device="cpu") -> dict:
    """Linear probe on fixed features -> dict(test_acc, val_acc, weight_decay); test labels are
    used only to score. Standardise with train statistics; for each weight decay (strongest first,
    warm-started) fit on 90 % of the training set and score the held-out 10 %; refit on the whole
    training set with the best decay; score test."""
    f_train, y_train = f_train.to(device, torch.float32), y_train.to(device)
    mean, std = f_train.mean(0), f_train.std(0).clamp_min(1e-6)  # (D,) from the training set only
    f_train, f_test = (f_train - mean) / std, (f_test.to(device, torch.float32) - mean) / std
    num_classes = int(y_train.max()) + 1
    perm = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed)).to(device)
    n_val = max(1, int(len(y_train) * val_frac))
    (f_val, y_val), (f_fit, y_fit) = [(f_train[i], y_train[i])
                                      for i in (perm[:n_val], perm[n_val:])]
    best, Wb = None, None
    for wd in weight_decays:
        Wb = _fit_logreg(f_fit, y_fit, num_classes, wd, Wb, max_iter)
        acc = _accuracy(f_val, y_val, Wb)
        if best is None or acc > best[0]:  # ties keep the stronger decay
            best = (acc, wd, Wb)
    val_acc, wd, Wb = best
    Wb = _fit_logreg(f_train, y_train, num_classes, wd, Wb, max_iter)  # refit on all training data
    return {"test_acc": _accuracy(f_test, y_test.to(device), Wb), "val_acc": val_acc,
            "weight_decay": wd}


def linear_probe(encoder, train_set, test_set, device="cpu", batch_size=256, **kw) -> float:
    """Top-1 test accuracy of a linear probe on the frozen encoder; sets: (uint8 images, labels)."""
    f_train, f_test = (extract_features(encoder, x, device, batch_size)
                       for x in (train_set[0], test_set[0]))
    return linear_probe_features(f_train, train_set[1], f_test, test_set[1], device=device,
                                 **kw)["test_acc"]


def val_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images' validation split: a fixed random 10 %, the same in every run -> (fit, val)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return perm[n // 10:], perm[:n // 10]


def split_probe(encoder, train, test, split: str = "test", n: int = 0, device="cpu") -> dict:
    """A pretraining run's closing probe: fit on train (x, y), score test (x, y, ...)
    -> {"linear_probe": acc}; with split "val" fit on 90 % of train and score a fixed other 10 %
    -> {"linear_probe_val": acc} (choose settings there, never on the test split). n > 0: only the
    first n training and n // 5 scored images (quick checks)."""
    x, y = train
    if split == "val":
        (xtr, ytr), (xte, yte) = [(x[i], y[i]) for i in val_split(len(x))]
    else:
        (xtr, ytr), (xte, yte) = (x, y), test[:2]
    m = max(n // 5, 1) if n else len(xte)  # the whole scored split unless n cuts it
    n = n or len(xtr)
    key = "linear_probe" if split == "test" else "linear_probe_val"
    return {key: round(linear_probe(encoder, (xtr[:n], ytr[:n]), (xte[:m], yte[:m]),
                                    device=device), 4)}


def knn_probe(f_train, y_train, f_test, y_test, k=20, temperature=0.07, device="cpu",
              chunk_elems=2 ** 24) -> float:
    """Weighted kNN top-1 accuracy (Wu et al. 2018 (InstDisc) / solo-learn, k=20, T=0.07): cosine
    similarity; each of the k nearest training points votes for its label, weight exp(sim / T)."""
    f_train = F.normalize(f_train.to(device, torch.float32), dim=1)  # (N, D)
    y_train, y_test = y_train.to(device), y_test.to(device)
    num_classes, k = int(max(y_train.max(), y_test.max())) + 1, min(k, len(y_train))
    chunk, correct = max(1, chunk_elems // len(f_train)), 0  # bounds the (chunk, N) similarities
    for i in range(0, len(f_test), chunk):
        q = F.normalize(f_test[i:i + chunk].to(device, torch.float32), dim=1)  # (b, D)
        sim, idx = (q @ f_train.T).topk(k, dim=1)  # (b, k)
        votes = torch.zeros(len(q), num_classes, device=device)
        votes.scatter_add_(1, y_train[idx], (sim / temperature).exp())  # (b, C)
        correct += votes.argmax(1).eq(y_test[i:i + chunk]).sum().item()
    return correct / len(f_test)
