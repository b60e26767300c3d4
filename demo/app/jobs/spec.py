"""A job's options and the command line they become (`python -m demo.distill …`), and the machine's limits.

Per-method knowledge stays with the methods: a spec names a method and passes `extra_args` through.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from demo.core.validate import SEED_MAX, env_float, env_int, number, show, whole


@dataclass(frozen=True)
class JobLimits:
    """What the machine allows: jobs at once (others wait queued), the longest run, and free disk to keep."""

    max_concurrent: int = 1  # 1 on a CPU: two trainings would only halve each other's speed
    max_iterations: int = 20_000
    min_free_bytes: int = 1 << 30
    cancel_grace_s: float = 5.0  # SIGTERM lets the loop checkpoint; SIGKILL after this many seconds

    def __post_init__(self):
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {self.max_concurrent!r}")
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be at least 1, got {self.max_iterations!r}")

    @classmethod
    def from_env(cls) -> JobLimits:
        """Defaults, overridden by GDL_MAX_JOBS, GDL_MAX_ITERATIONS and GDL_MIN_FREE_GB."""
        return cls(
            max_concurrent=env_int("GDL_MAX_JOBS", cls.max_concurrent, 1, 64),
            max_iterations=env_int("GDL_MAX_ITERATIONS", cls.max_iterations, 1, 10_000_000),
            min_free_bytes=int(env_float("GDL_MIN_FREE_GB", cls.min_free_bytes / 2**30, 0.0, 1e6) * 2**30),
        )


@dataclass(frozen=True)
class JobSpec:
    """The options of one job; `argv()` turns them into the `python -m demo.distill` command line."""

    method: str
    iterations: int
    teacher: str | None = None
    init: str | None = None
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    name: str | None = None
    log_every: int | None = None  # default: about 50 progress rows per run, at most every 25 steps
    checkpoint_every: int | None = None  # default: about 10 checkpoints per run, at most every 500 steps
    num_processes: int = 1  # > 1: `accelerate launch --multi_gpu --num_processes N` (gloo on a CPU)
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, d: dict) -> JobSpec:
        """The spec stored as JSON (`asdict`), with `extra_args` a tuple again."""
        return cls(**{**d, "extra_args": tuple(d.get("extra_args", ()))})

    def argv(self, out: Path, name: str, port: int | None = None) -> list[str]:
        log_every = self.log_every or max(1, min(25, self.iterations // 50))
        checkpoint_every = self.checkpoint_every or max(1, min(500, self.iterations // 10))
        args = ["--method", self.method, "--out", str(out), "--name", self.name or name]
        args += ["--iterations", str(self.iterations), "--batch-size", str(self.batch_size), "--lr", repr(self.lr)]
        args += ["--seed", str(self.seed), "--log-every", str(log_every), "--checkpoint-every", str(checkpoint_every)]
        if self.teacher:
            args += ["--teacher", self.teacher]
        if self.init:
            args += ["--init", self.init]
        args += list(self.extra_args)
        if self.num_processes == 1:
            return [sys.executable, "-m", "demo.distill", *args]
        # `--multi_gpu` selects torch's elastic launcher; without CUDA the loop's Accelerator(cpu=True) uses gloo.
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(self.num_processes)]
        launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if port is not None:
            launch += ["--main_process_port", str(port)]
        return [*launch, "-m", "demo.distill", *args]


def validated_spec(spec: JobSpec, limits: JobLimits, resolve_model: Callable[[str], Path]) -> JobSpec:
    """`spec` checked against the methods and `limits`, its teacher and init resolved to model folders by
    `resolve_model`; ValueError with one sentence otherwise."""
    from demo.distill import METHODS

    if spec.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(sorted(METHODS))}, got {spec.method!r}")
    if (
        isinstance(spec.iterations, bool)
        or not isinstance(spec.iterations, int)
        or not 1 <= spec.iterations <= limits.max_iterations
    ):
        raise ValueError(f"iterations must be an integer in 1..{limits.max_iterations}, got {spec.iterations!r}")
    if isinstance(spec.batch_size, bool) or not isinstance(spec.batch_size, int) or not 1 <= spec.batch_size <= 4096:
        raise ValueError(f"batch size must be an integer in 1..4096, got {show(spec.batch_size)}")
    lr = number("learning rate", spec.lr, 0.0, 1.0, open_lo=True, open_hi=True)
    seed = whole("seed", spec.seed, 0, SEED_MAX)
    whole("num_processes", spec.num_processes, 1, 64)
    for key in ("log_every", "checkpoint_every"):
        if getattr(spec, key) is not None:
            whole(key.replace("_", " "), getattr(spec, key), 1, limits.max_iterations)
    if spec.name is not None and (not isinstance(spec.name, str) or not 1 <= len(spec.name) <= 100 or "/" in spec.name):
        raise ValueError(f"name must be 1..100 characters without '/', got {show(spec.name)}")
    if METHODS[spec.method].needs_teacher and not spec.teacher:
        raise ValueError(f"Method {spec.method} distils a teacher, so it needs a teacher model.")
    resolved = {}
    for key in ("teacher", "init"):
        value = getattr(spec, key)
        resolved[key] = str(resolve_model(value)) if value else None
    return JobSpec(**{**asdict(spec), **resolved, "lr": lr, "seed": seed, "extra_args": tuple(spec.extra_args)})
