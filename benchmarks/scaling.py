"""benchmarks/scaling.py — pretrain.py's throughput with 1, 2, ... processes under torchrun
(docs/scale.md).

Each row launches `python -m torch.distributed.run --nproc_per_node N pretrain.py ...` (gloo on
CPUs, NCCL on GPUs) in a temporary folder and reads the training loop's times from the run's
metrics.csv. Every process does a full update on its own batch and envs, so N processes do N x
batch-size pairs per update.

    python benchmarks/scaling.py             # 1 and 2 gloo processes, < 1 min on a 2-core x86 CPU
    python benchmarks/scaling.py --device cuda --nprocs 1 2 4 8 --batch-size 256 --num-envs 64 \\
        --updates 200
"""
import os, platform, re, socket, subprocess, sys, tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import ROOT, cli, parse_config  # noqa: E402


@dataclass
class Config:
    nprocs: list[int] = field(default_factory=lambda: [1, 2])  # process counts, one row each
    updates: int = 30  # encoder updates per run (the first 10 are left out of the rate: warm-up)
    batch_size: int = 64  # pairs per update and process
    num_envs: int = 16  # envs per process
    device: Literal["cpu", "cuda"] = "cpu"  # cpu: gloo, one thread per process; cuda: NCCL, one
    #                                         GPU per process
    generator: str = str(ROOT / "checkpoints" / "embedded_gan.pt")  # the world (pretrain.py
    #                                                                  --generator)

    def rules(self) -> dict:
        return {"updates >= 20 (two logged updates after the warm-up)": self.updates >= 20,
                "at least one process count, each >= 1":
                    bool(self.nprocs) and min(self.nprocs) >= 1}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def root_cause(stderr: str) -> str:
    """torchrun's output of a failed job -> the line that says why: a worker's `error:` line, else
    its exception (Python's or C++'s), else how the worker ended (exit code or signal in torchrun's
    summary)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    exception = re.compile(r"(\[rank\d+\]:\s*)?[\w.]*(Error|Exception)\b")  # ValueError: ...
    raised = [line for line in lines if (exception.match(line) and "ChildFailedError" not in line)
              or line.startswith(("terminate called", "what():"))]  # C++: std::terminate
    ended = [line for line in lines if line.startswith(("exitcode", "Signal"))]
    return ((errors or raised or ended or lines or ["no output"])[-1])[:300]


def free_port() -> str:
    """A free TCP port on the loopback address, for torchrun's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def measure(cfg: Config, n: int) -> dict:
    """One torchrun launch in a fresh temporary folder -> updates/s (after warm-up) and pairs/s of
    the whole job."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
               "--master_addr", "127.0.0.1", "--master_port", free_port(),
               str(ROOT / "pretrain.py"), "--generator", cfg.generator,
               "--updates", str(cfg.updates), "--batch-size", str(cfg.batch_size),
               "--num-envs", str(cfg.num_envs), "--device", cfg.device,
               "--checkpoint-every", str(cfg.updates), "--no-probe", "--name", "scaling"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"error: the run with {n} processes failed: {root_cause(proc.stderr)}")
        metrics = [line.split(",") for line in
                   (Path(tmp) / "runs/scaling/metrics.csv").read_text().splitlines()]
        col = {k: i for i, k in enumerate(metrics[0])}
        # (update, seconds) of each logged update (every 10th)
        rows = [(float(r[col["update"]]), float(r[col["time_s"]])) for r in metrics[1:]]
    (u0, t0), (u1, t1) = rows[0], rows[-1]
    rate = (u1 - u0) / (t1 - t0)
    return {"n": n, "updates_s": rate, "pairs_s": rate * n * cfg.batch_size}


@cli
def main(argv=None) -> None:
    cfg = parse_config(Config, argv)
    print(f"{cpu_name()}, {os.cpu_count()} logical cores | device {cfg.device} | per process: "
          f"batch {cfg.batch_size} pairs, {cfg.num_envs} envs, 1 thread | updates {cfg.updates} "
          f"(rate over updates 10..{cfg.updates // 10 * 10})\n")
    print("| processes | updates/s | pairs/s (all processes) | pairs/s vs the first row |\n"
          "|---|---|---|---|")
    first = None
    for n in cfg.nprocs:
        r = measure(cfg, n)
        first = first or r["pairs_s"]
        print(f"| {n} | {r['updates_s']:.2f} | {r['pairs_s']:.0f} | {r['pairs_s'] / first:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
