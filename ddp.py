"""ddp.py — torchrun's plumbing for pretrain.py: N processes, one model (docs/scale.md).

Imported only under torchrun (runfiles.distributed). Each rank plays its own world with its own seed
and replay buffer; DDP averages the gradients of the encoder + head and of the SAC networks, so the
weights stay the same on every rank. Rank 0 writes the run folder; checkpoints hold every rank's own
part (world, buffer, RNG states, BN statistics).
"""
import os, sys

import torch
import torch.distributed as dist
import torch.nn as nn

from common import pick_device

LOCAL = ("rng", "cuda_rng", "world", "buffer", "knn_mean", "spread_rng", "bn")  # each rank's own
SAC_NETS = ("actor", "q1", "q2")  # the SAC modules that are called: DDP-wrapped while training


def join(device: str) -> tuple[int, int]:
    """Join torchrun's process group (NCCL on GPUs, gloo on CPUs) -> (rank, world_size)."""
    cuda = pick_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if dist.get_rank() > 0:
        sys.stdout = open(os.devnull, "w")  # only rank 0 prints (errors still reach stderr)
    else:
        print(f"torchrun: {dist.get_world_size()} processes, each rank with its own world seed and "
              f"replay buffer")
    return dist.get_rank(), dist.get_world_size()


def same_folder(folder):
    """Rank 0's run folder on every rank."""
    box = [folder]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast(module: nn.Module) -> None:
    """Every tensor of module.state_dict() (weights and buffers) from rank 0 to all ranks."""
    for t in module.state_dict().values():
        dist.broadcast(t, src=0)


def average_grad(g: torch.Tensor) -> torch.Tensor:
    """Gradient hook: the mean of g over the ranks."""
    g = g.clone()
    dist.all_reduce(g)
    return g / dist.get_world_size()


def mean_over_ranks(values: list) -> list:
    """One logged update's metrics, averaged over the ranks."""
    v = torch.tensor(values, dtype=torch.float64)  # (M,)
    if dist.get_backend() == "nccl":  # NCCL reduces GPU tensors only
        v = v.cuda()
    dist.all_reduce(v)
    return (v / dist.get_world_size()).tolist()


def to_cpu(x):
    """Tensors in nested dicts and lists -> the same structure on the CPU."""
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, dict):
        return {k: to_cpu(v) for k, v in x.items()}
    return type(x)(to_cpu(v) for v in x) if isinstance(x, (list, tuple)) else x


def gather_checkpoint(run, s: dict) -> dict:
    """Rank 0 gets the checkpoint s with s["ranks"][r] = rank r's own entries (LOCAL)."""
    s["bn"] = dict(run.model.named_buffers())  # BN statistics are rank-local between broadcasts
    if "sac" in s:  # distribute() wrapped SAC's modules in DDP: save them under their plain names
        s["sac"]["nets"] = {k.replace(".module.", "."): v for k, v in s["sac"]["nets"].items()}
    own = to_cpu({k: s.pop(k) for k in LOCAL if k in s})  # gather_object pickles it
    parts = [None] * run.world_size if run.rank == 0 else None
    dist.gather_object(own, parts, dst=0)
    return {**s, "ranks": parts, "world_size": run.world_size}


def own_part(s: dict, rank: int, world_size: int) -> dict:
    """The checkpoint as rank `rank` resumes it: the shared weights plus its own part."""
    saved = s.get("world_size", 1)
    if saved != world_size:
        raise ValueError(f"it was written by {saved} process(es), this run has {world_size}; "
                         f"resume with --nproc_per_node {saved}")
    own = dict(s["ranks"][rank])
    return {**s, **own, "model": {**s["model"], **own.pop("bn")}}


def distribute(run) -> None:
    """After a resume: every rank takes rank 0's weights, and DDP averages the gradients of the
    encoder + head and of the SAC networks over the ranks in each backward."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    if run.cfg.method == "supervised":  # its head is never used; DDP expects a gradient for every
        run.model.head.requires_grad_(False)  # trainable parameter of what it wraps
    bn = {k: v.clone() for k, v in run.model.named_buffers()}  # BN statistics: a rank keeps its own
    broadcast(run.model)
    run.net = DDP(run.model)  # DDP broadcasts rank 0's BN statistics before each forward
    run.model.load_state_dict(bn, strict=False)
    if run.sac is not None:
        broadcast(run.sac)  # the target critics and log alpha too
        for k in SAC_NETS:  # wrapped: each backward averages their gradients
            setattr(run.sac, k, DDP(getattr(run.sac, k)))
        run.sac.log_alpha.register_hook(average_grad)  # a bare parameter: averaged by a hook


def end(run) -> None:
    """Every rank ends with the weights (and BN statistics) rank 0 saves and its plain modules back,
    and leaves the process group."""
    broadcast(run.model)
    run.net = run.model
    if run.sac is not None:
        for k in SAC_NETS:
            setattr(run.sac, k, getattr(run.sac, k).module)
    # gloo's worker thread frees the broadcast's tensors after the broadcast returns, and needs
    # Python's lock to do so: a rank that went straight on to exit could abort (SIGABRT). The
    # barrier lets go of that lock while it waits for the other ranks.
    dist.barrier()
    dist.destroy_process_group()
