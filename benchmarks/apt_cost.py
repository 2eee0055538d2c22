"""benchmarks/apt_cost.py — what the agent's two data-path choices cost (< 1 min on a 2-core x86
CPU).

1. apt_reward(features (B, 256), k=12) for B = 256 ... 4096: the kNN step is O(B^2 D) (cdist) +
   O(B^2) (topk), so time / (B/256)^2 should stay roughly flat once B is large enough to amortise
   call overheads.
2. Replay storage: sample 512 transitions as stored uint8 frames (+ float conversion, what
   pretrain.py does), versus storing only latents + labels and re-decoding obs and next_obs (1024
   frames) with a 32x32 DCGAN.

    python benchmarks/apt_cost.py [--device cpu|cuda] [--threads 1]
"""
import os
import statistics
import sys
import time

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import check_threads, cli, parse_config  # noqa: E402
from agent import ReplayBuffer, apt_reward  # noqa: E402


def timeit(fn, reps: int, device: torch.device) -> float:
    """Median wall time of fn() in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def stand_in_dcgan(latent_dim: int = 64) -> nn.Module:
    """Same shapes as generator.py's G (width 32): z (B, 64) -> (B, 3, 32, 32); BN instead of
    conditional BN."""
    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(latent_dim, 4 * 4 * 128)  # -> (B, 2048)
            self.body = nn.Sequential(
                nn.BatchNorm2d(128), nn.ReLU(),
                nn.ConvTranspose2d(128, 64, 4, 2, 1),  # (B, 64, 8, 8)
                nn.BatchNorm2d(64), nn.ReLU(),
                nn.ConvTranspose2d(64, 32, 4, 2, 1),  # (B, 32, 16, 16)
                nn.BatchNorm2d(32), nn.ReLU(),
                nn.ConvTranspose2d(32, 32, 4, 2, 1),  # (B, 32, 32, 32)
                nn.BatchNorm2d(32), nn.ReLU(),
                nn.Conv2d(32, 3, 3, 1, 1), nn.Tanh())  # (B, 3, 32, 32)

        def forward(self, z):
            return self.body(self.fc(z).view(-1, 128, 4, 4))  # (B, 128, 4, 4) -> (B, 3, 32, 32)
    return G().eval()


@dataclass
class Config:
    device: Literal["cpu", "cuda"] = "cpu"  # where the buffer, the networks and the reward live
    buffer: int = 50_000  # transitions held when sampling
    threads: int = 0  # torch CPU threads (0 = torch's default)

    def rules(self) -> dict:
        check_threads(self.threads, "apt_cost.py")
        return {"buffer >= 1": self.buffer >= 1,
                "device cpu, or cuda with a GPU visible to torch":
                    self.device == "cpu" or torch.cuda.is_available()}


@cli
def main(argv=None) -> None:
    args = parse_config(Config, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")

    # 1. APT reward cost
    print("| B | ms / call | ratio to B=256 | ratio / (B/256)^2 |")
    print("|---:|---:|---:|---:|")
    base = None
    for B in (256, 512, 1024, 2048, 4096):
        f = torch.randn(B, 256, device=dev)  # (B, D)
        ms = timeit(lambda: apt_reward(f, k=12), reps=15 if B <= 1024 else 5, device=dev)
        base = base or ms
        print(f"| {B} | {ms:.1f} | {ms / base:.1f} | {ms / base / (B / 256) ** 2:.2f} |")

    # 2. uint8 frames in the buffer vs re-decoding latents on sampling
    A, batch, N = 64, 512, args.buffer
    buf = ReplayBuffer(N, A, device=dev)
    for i in range(0, N, 5000):  # fill with random frames, 5000 at a time
        n = min(5000, N - i)
        frames = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=dev)
        # frames: (n, 3, 32, 32)
        actions = torch.rand(n, A, device=dev) * 2 - 1  # (n, A)
        buf.add(frames, actions, frames.flip(0), torch.randint(0, 10, (n,), device=dev))
    gen = torch.Generator(device=dev).manual_seed(0)

    def sample_frames():
        s = buf.sample(batch, gen)
        return s["obs"].float() / 127.5 - 1, s["next_obs"].float() / 127.5 - 1  # (B, 3, 32, 32) x2

    z = torch.randn(N, A, device=dev)  # stored latents (N, A); next latent = z + action
    act = torch.rand(N, A, device=dev) * 2 - 1  # (N, A)
    G = stand_in_dcgan(A).to(dev)

    @torch.no_grad()
    def sample_and_decode():
        idx = torch.randint(N, (batch,), generator=gen, device=dev)  # (B,)
        return G(torch.cat([z[idx], z[idx] + act[idx]]))  # (2B, 3, 32, 32): obs and next_obs

    ms_sample = timeit(lambda: buf.sample(batch, gen), reps=30, device=dev)
    ms_frames = timeit(sample_frames, reps=30, device=dev)
    ms_decode = timeit(sample_and_decode, reps=5, device=dev)
    per_tr = 2 * 3 * 32 * 32 + 4 * A + 8
    per_latent = 2 * 4 * A + 8
    print(f"\nreplay, batch {batch} from {N:,} stored (uint8 frames: {per_tr} B/transition = "
          f"{per_tr * N / 1e9:.2f} GB; latents: {per_latent} B/transition = "
          f"{per_latent * N / 1e6:.0f} MB)")
    print("| storage | ms / batch of 512 | frames / s |")
    print("|---|---:|---:|")
    print(f"| uint8 frames: sample only | {ms_sample:.1f} | {2 * batch / ms_sample * 1e3:,.0f} |")
    print(f"| uint8 frames: sample + to float | {ms_frames:.1f} | "
          f"{2 * batch / ms_frames * 1e3:,.0f} |")
    print(f"| latents + labels: sample + DCGAN re-decode | {ms_decode:.1f} | "
          f"{2 * batch / ms_decode * 1e3:,.0f} |")
    print(f"\nstoring frames is {ms_decode / ms_frames:.0f}x faster per sampled batch than "
          f"re-decoding")


if __name__ == "__main__":
    main()
