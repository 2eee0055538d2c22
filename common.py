"""common.py — the harness every script shares, at the bottom of the house (imports none of ours).

    cli(main)                    every script's one way out: one `error:` line, or one on Ctrl-C
    parse_config(Config, argv)   a dataclass -> flags (nested configs flattened), each checked here
    pick_device("auto")          CUDA when present, else the CPU (where it also tunes malloc)
    seed_everything(seed)        python, numpy and torch in one call
    atomic_path(path)            write a temporary file, then rename: never a half-written file
    load_checkpoint(path, kind)  the one careful loader: torch.load(weights_only=True), kind, keys
    check_out(path, kind)        an output path the run can write: refused before any work
    RunLock(folder)              runs/<name>/.lock: one process per run folder
    Stopwatch                    seconds per stage, without waiting for the GPU on unlogged updates
    one_thread()                 a block of many small CPU ops on one torch thread
Files import downward only: common -> data -> encoder -> generator -> world -> agent -> evaluate ->
runfiles -> pretrain -> transfer -> play (biggan.py and ddp.py only when used).
"""
import argparse, contextlib, ctypes, dataclasses, functools, inspect, io, os, random, re, sys, time
import tokenize, typing
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: RunLock does not lock
    fcntl = None

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
DEVICES = ("auto", "cpu", "cuda")  # --device choices; "auto" = CUDA when present, else CPU
TUNE_MALLOC = True  # pick_device calls keep_freed_memory on the CPU (benchmarks/speed.py: off)


class ConfigError(ValueError):
    """A flag or input the run cannot use: printed as one `error:` line, exit non-zero."""


def cli(main):
    """Wrap a script's main: whatever goes wrong outside the method (a bad flag, a missing or
    damaged file, a full disk, an allocation that cannot fit, a diverged loss) ends in one `error:`
    line and exit status 1; Ctrl-C in one line. A main that keeps a run says what Ctrl-C kept."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            sys.exit("interrupted: every file already written is complete (writes are atomic)")
        except (ValueError, OSError, FloatingPointError, MemoryError, RuntimeError) as e:
            text = " ".join(str(e).split()) or type(e).__name__
            if isinstance(e, RuntimeError) and not re.search(r"memory|allocat", text, re.I):
                raise  # a bug, not bad input: keep its traceback
            if isinstance(e, (MemoryError, RuntimeError)):
                text = f"out of memory ({text[:200]}); ask for smaller sizes"
            sys.exit(f"error: {text}")
    return wrapped


# ---- device and seeds ----------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    """"auto" -> CUDA when present, else CPU; on the CPU it tunes malloc (keep_freed_memory)."""
    if name not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA GPU (use --device cpu or auto)")
    device = torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and TUNE_MALLOC:
        keep_freed_memory()
    return device


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed buffers: by default every activation above 128 KiB comes
    from fresh pages the kernel must fault in and zero, which slows the generator down markedly
    (docs/performance.md). It moves buffers, never results (the same weights with and without).
    Returns whether both settings took (False, a no-op, off glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mmap_max = libc.mallopt(-4, 0)  # M_MMAP_MAX = 0: every buffer from the heap, none from mmap
    trim = libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap
    return mmap_max == 1 and trim == 1  # mallopt returns 1 on success


def release_freed_memory() -> None:
    """Hand the freed heap back to the kernel (glibc's malloc_trim; elsewhere, nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def seed_everything(seed: int) -> None:
    """The one seeding block: python, numpy and torch (CPU and every GPU). Worlds seed their own.
    The same seed gives the same weights at the same torch thread count (docs/performance.md)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---- configs and command lines -------------------------------------------------------------------
@functools.lru_cache
def field_help(cls) -> dict[str, str]:
    """{field: its trailing comment} from the dataclass's source; comment-only lines continue it."""
    lines = inspect.getsource(cls).splitlines()
    names = {f.name for f in dataclasses.fields(cls)}
    helps, last = {}, None
    for tok in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline):
        if tok.type != tokenize.COMMENT:
            continue
        line = lines[tok.start[0] - 1]
        m = re.match(r"\s+(\w+)\s*:", line)
        if m and m.group(1) in names:
            last = m.group(1)
            helps[last] = tok.string.lstrip("# ").strip()
        elif last and line.strip().startswith("#"):  # a continuation of the field above
            helps[last] += " " + tok.string.lstrip("# ").strip()
        else:
            last = None
    return helps


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one `error:` line instead of argparse's usage block
        sys.exit(f"error: {message} (see --help)")


def config_fields(cls, prefix: str = "", defaults=None):
    """(flag name, field, its class, its default) of every field; a nested config's fields are
    flattened, prefixed by the field's metadata "prefix" (SAC's: --sac-gamma; the world's: --mix),
    with the defaults of the parent's default instance (a script may set its own SAC defaults)."""
    defaults = cls() if defaults is None else defaults
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(f.type):
            yield from config_fields(f.type, prefix + f.metadata.get("prefix", ""), value)
        else:
            yield prefix + f.name, f, cls, value


def parse_config(cls, argv=None):
    """A config from the command line (make_parser), every rule of it and of its nested configs
    checked (their rules() methods): the one place flags are validated. argv items may be paths."""
    argv = None if argv is None else [str(a) for a in argv]
    flags = vars(make_parser(cls).parse_intermixed_args(argv))  # run folders may sit between flags

    def build(cls, prefix):
        kw = {f.name: build(f.type, prefix + f.metadata.get("prefix", ""))
              if dataclasses.is_dataclass(f.type) else flags[prefix + f.name]
              for f in dataclasses.fields(cls)}
        return cls(**kw)
    cfg = build(cls, "")
    check_rules(cfg, Path(sys.modules[cls.__module__].__file__).name)
    return cfg


def check_rules(cfg, who: str, prefix: str = "") -> None:
    """Raise ConfigError naming the first failing rule of cfg.rules() or its nested configs' (a
    prefixed config's rule names its flags: "... needs updates >= 1 (the --sac-* flags)")."""
    for f in dataclasses.fields(cfg):
        if dataclasses.is_dataclass(getattr(cfg, f.name)):
            check_rules(getattr(cfg, f.name), who, prefix + f.metadata.get("prefix", ""))
    flags = f" (the --{prefix.replace('_', '-')}* flags)" if prefix else ""
    for rule, ok in (cfg.rules() if hasattr(cfg, "rules") else {}).items():
        if not ok:
            raise ConfigError(f"{who} needs {rule}{flags}")


def integer(text: str) -> int:
    """An int flag's value: 100, or 1e9 / 1e+05 where it is a whole number."""
    try:
        return int(text)
    except ValueError:
        value = float(text)
        if not value.is_integer():
            raise
        return int(value)


def make_parser(cls) -> argparse.ArgumentParser:
    """argparse flags from a dataclass: --field value; bools --flag / --no-flag; Literal fields take
    only their choices; list fields take several values; metadata {"positional": True} makes a
    positional. The field's comment is its help text; --help shows every default and choice."""
    doc = (sys.modules[cls.__module__].__doc__ or "").strip()
    p = _Parser(description=doc.split("\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name, f, owner, default in config_fields(cls):
        kw = {"default": default, "help": field_help(owner).get(f.name, " ").replace("%", "%%")}
        if typing.get_origin(f.type) is typing.Literal:
            kw.update(choices=typing.get_args(f.type), type=type(typing.get_args(f.type)[0]))
        elif f.type in (bool, "bool"):
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(f.type) is list:
            kw.update(nargs="*", type=typing.get_args(f.type)[0])
        else:
            kw["type"] = integer if type(default) is int else type(default)
        if f.metadata.get("positional"):
            p.add_argument(name, metavar=name.upper(), **{"nargs": "*", **kw})
        else:
            p.add_argument("--" + name.replace("_", "-"), dest=name, **kw)
    return p


def require(rules: dict[str, bool], who: str) -> None:
    """Raise ConfigError naming the first rule that fails: {"updates >= 1": cfg.updates >= 1}."""
    for rule, ok in rules.items():
        if not ok:
            raise ConfigError(f"{who} needs {rule}")


# ---- files ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path):
    """with atomic_path(p) as tmp: write tmp. On success tmp replaces p in one rename; on any error
    p is untouched and tmp removed. tmp's name carries the PID: two processes never share one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_atomic(obj, path) -> None:
    """torch.save, atomically; text (str) as UTF-8. A full disk or an unwritable folder raises one
    OSError naming the file, and the previous file stays as it was."""
    try:
        with atomic_path(path) as tmp:
            if isinstance(obj, str):
                tmp.write_text(obj)
            else:
                torch.save(obj, tmp)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a full disk as a RuntimeError
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise OSError(f"could not write {path} ({first}); {path} is unchanged") from None


def load_checkpoint(path, kind: str, keys=(), map_location="cpu") -> dict:
    """The one careful loader: torch.load(weights_only=True) of a dict with kind=`kind` and `keys`,
    one clear error (ValueError) for a missing, truncated, foreign or hand-damaged file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated / not a torch file / unsafe pickle
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"{kind} checkpoint {path} is corrupt or not a torch file: "
                         f"{first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        article = "an" if kind[0] in "aeiou" else "a"
        raise ValueError(f"{path} is not {article} {kind} checkpoint (no kind={kind!r} entry)")
    missing = [k for k in keys if k not in ckpt]
    if missing or not isinstance(ckpt.get("config", {}), dict):
        raise ValueError(f"{kind} checkpoint {path} lacks {', '.join(missing) or 'a config dict'}")
    return ckpt


def load_weights(module: torch.nn.Module, state_dict, what: str) -> torch.nn.Module:
    """module.load_state_dict, one clear error for weights of another shape or NaN / inf ones."""
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError, KeyError) as e:
        why = " ".join(str(e).split())[:300]
        raise ValueError(f"{what} does not fit its network: {why}") from None
    require_finite_weights(module.state_dict(), what)
    return module


RUN_NAME = re.compile(r"[A-Za-z0-9._-]+")
MAX_NAME = 100  # characters of a run name (file systems take 255 bytes per path component)


def shipped(path) -> Path:
    """A relative path missing here but present in the repository (the shipped checkpoints/, when
    a script runs from another folder) -> the repository's file; any other path as it is."""
    path = Path(path)
    return ROOT / path if not path.is_absolute() and not path.exists() and (ROOT / path).exists() \
        else path


def run_dir(name: str, root: str = "runs") -> Path:
    """runs/<name>: one path component of at most MAX_NAME letters, digits, . _ - (not . or ..)."""
    if len(name) > MAX_NAME:
        raise ConfigError(f"--name must be at most {MAX_NAME} characters, got {len(name)}")
    if not RUN_NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"--name must be one folder name of letters, digits, '.', '_' or '-' "
                          f"(not '.' or '..'), got {name!r}")
    return Path(root) / name


CHECKPOINTS = ROOT / "checkpoints"  # the tracked folder of shipped weights


def check_out(path, kind: str = "file", what: str = "--out", allow_checkpoints=False) -> Path:
    """Refuse, before any work, an output the run could not write: `path` (kind "file" or "dir")
    exists as the other kind, lies under checkpoints/ (unless allow_checkpoints: the user asked),
    or its nearest existing folder is not a folder or is read-only. Raises ConfigError."""
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise ConfigError(f"{what} {path} is a folder, not a file")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} exists and is not a folder")
    resolved = path.resolve()
    if not allow_checkpoints and (resolved == CHECKPOINTS or CHECKPOINTS in resolved.parents):
        raise ConfigError(f"{what} {path} lies in {CHECKPOINTS}, the tracked folder of shipped "
                          f"weights: write under runs/ instead")
    folder = path if kind == "dir" else path.parent
    while not folder.exists() and folder != folder.parent:  # the folder to hold the new ones
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{what} {path} cannot be written: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):  # False on a read-only file system, even for root
        raise ConfigError(f"{what} {path} cannot be written: {folder} is read-only")
    return path


def require_finite_weights(state_dict: dict, what: str) -> None:
    """Raise ConfigError naming the first floating-point tensor of state_dict with a NaN or inf."""
    for name, t in state_dict.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
            raise ConfigError(f"{what} holds non-finite values (NaN or inf) in {name}")


def check_threads(threads: int, who: str) -> None:
    """--threads: 0 (torch's default) up to 4 x the cores; far more crashes OpenMP (a segfault)."""
    most = 4 * (os.cpu_count() or 1)
    require({f"0 <= threads <= {most} (4 x the {os.cpu_count() or 1} cores; 0 = torch's default)":
             0 <= threads <= most}, who)


class RunLock:
    """runs/<name>/.lock, locked with fcntl.flock and holding the owner's PID: a second process on
    the same run folder stops with one line. The OS releases the lock when its process ends, however
    it ends, so a crash leaves no stale lock. Without fcntl (Windows) nothing is locked."""

    def __init__(self, folder: Path):
        self.path, self.file = Path(folder) / ".lock", None

    def __enter__(self):
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(self.file.fileno()).st_nlink == 0:  # its owner removed it meanwhile
                raise BlockingIOError
        except BlockingIOError:
            self.file.seek(0)
            owner = self.file.read().strip() or "?"
            self.file.close()
            raise ConfigError(f"{self.path.parent} is in use by process {owner} (lock file "
                              f"{self.path})") from None
        self.file.truncate(0)
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            self.path.unlink(missing_ok=True)  # before unlocking: see the st_nlink check
            self.file.close()


def timed(stages: dict, key: str, device: torch.device | None = None):
    """Add the block's wall time to stages[key] (on CUDA, after the queued kernels finished)."""
    return Stopwatch(stages, device or torch.device("cpu"), every=1)(key)


@contextlib.contextmanager
def one_thread():
    """Run a block of many small ops on one CPU thread. Split over several threads, every op waits
    for its slowest: on a machine busy with other jobs, a stall (docs/performance.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Stopwatch:
    """Seconds per stage of an iteration, added to `seconds`: `with watch("encoder update"):`. On
    the CPU every block is timed; on CUDA a block is timed (waiting for its kernels) only while
    `sampling` (the loop sets it on logged updates) and counts `every` times: others never wait."""

    def __init__(self, seconds: dict, device: torch.device, every: int):
        self.seconds, self.cuda, self.every = seconds, device.type == "cuda", every
        self.sampling = True

    @contextlib.contextmanager
    def __call__(self, stage: str):
        if self.cuda and not self.sampling:
            yield
            return
        sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        sync()
        t = time.perf_counter()
        yield
        sync()
        seconds = (self.every if self.cuda else 1) * (time.perf_counter() - t)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
