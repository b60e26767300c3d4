"""The one generic training loop: it knows nothing about which method (teacher training or a distillation) it runs.

A method (see `demo.distill.base.Method`) supplies the trainable modules, a loss for step `k` and an export; the
loop adds the optimiser, lr schedule, bf16 autocast, EMA, gradient averaging across processes (accelerate),
atomic checkpoints with resume (`demo.distill.checkpoint`), and a `stats.jsonl` log (`demo.core.stats`) in a run folder
(`demo.core.run_folder`, as in NVlabs/edm).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from demo.core.card import read_card, write_card
from demo.core.run_folder import RunFolder
from demo.core.stats import append_row
from demo.distill.checkpoint import (  # noqa: F401  (CHECKPOINT_PREFIX, list_ and prune_checkpoints: re-exported for callers of demo.distill.train)
    CHECKPOINT_PREFIX,
    _load_optimizer,
    latest_valid_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    save_checkpoint,
)

PRECISION_CHOICES = ("auto", "bf16", "no")
PRECISION_WORDS = {"bf16": "bf16 autocast", "no": "float32"}  # a resolved precision, as a card records it


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200  # linear warm-up steps
    lr_final: float = 0.1  # cosine decay to lr * lr_final at the last iteration
    weight_decay: float = 0.0
    ema_decay: float = 0.999  # upper bound; EMA warms up as min(decay, (1 + k) / (10 + k))
    grad_clip: float = 1.0
    seed: int = 0
    mixed_precision: str = "auto"  # "bf16" (autocast), "no", or "auto": bf16 where the hardware has it (bf16_is_fast)
    log_every: int = 25
    checkpoint_every: int = 500
    keep_checkpoints: int = 2

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {self.iterations!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size!r}")
        if not (0 < self.lr < 1):
            raise ValueError(f"lr must be in (0, 1), got {self.lr!r}")
        if self.mixed_precision not in PRECISION_CHOICES:
            raise ValueError(f"mixed_precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.mixed_precision!r}")


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 autocast speeds training up here: a CUDA device that supports it, or a CPU with bfloat16
    instructions (AVX512-BF16 or AMX). Without them the CPU emulates bf16 and is slower than float32 — measured on an
    AVX2-only 2-core EPYC: about 1 img/s under bf16 against 12 img/s in float32 for the 3.9M-parameter guided student."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: no cheap way to tell, so keep float32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(mixed_precision: str, device: torch.device) -> str:
    """ "auto" → "bf16" where `bf16_is_fast`, else "no"; an explicit choice is kept."""
    if mixed_precision == "auto":
        return "bf16" if bf16_is_fast(device) else "no"
    return mixed_precision


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from lr to lr * lr_final."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.iterations - cfg.warmup)
    return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in module.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach().float(), 1 - d)

    def copy_to(self, module: torch.nn.Module) -> None:
        state = module.state_dict()
        module.load_state_dict({**state, **{k: v.to(state[k].dtype) for k, v in self.shadow.items()}})


def train(
    method,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    accelerator=None,
    should_stop: Callable[[], bool] | None = None,
    export_only: bool = False,
    command: str | None = None,
) -> dict:
    """Run (or resume) `method` for cfg.iterations steps in `run_dir`; returns the last logged stats row.

    The exported folder records how it was made: card.json's `training` gains the precision the loop ran in and,
    when given, the `command` that started it, and the run's `stats.jsonl` is copied in as `training_stats.jsonl`.

    On SIGTERM/SIGINT (or when `should_stop()` turns true) the loop writes a checkpoint and returns early.
    With `export_only`, nothing is trained: the latest valid checkpoint's EMA student is exported to run_dir/model.
    """
    from accelerate import Accelerator

    run_dir = Path(run_dir)
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    is_main = accelerator.is_main_process
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config = {"train": asdict(cfg), "method": method.describe(), "num_processes": accelerator.num_processes}
        RunFolder(run_dir).write_config(config)
    method.to(device)
    modules = method.trainable_modules()
    if accelerator.num_processes > 1:
        _broadcast_from_main(modules)  # fresh layers are initialised differently on each rank
    param_groups = method.param_groups(cfg.lr, cfg.weight_decay)
    base_lrs = [g["lr"] for g in param_groups]
    opt = torch.optim.AdamW(param_groups, betas=(0.9, 0.99), eps=1e-8)
    ema = EMA(method.student, cfg.ema_decay)
    aux_opts = method.auxiliary_optimizers()  # a second network's optimiser (HD's fake score): checkpointed below
    start = 0
    found = latest_valid_checkpoint(run_dir)
    if found is not None:
        ckpt, meta, tensors = found
        for name, m in modules.items():
            prefix = f"module.{name}."
            m.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        ema.shadow = {k[4:]: v.float() for k, v in tensors.items() if k.startswith("ema.")}
        _load_optimizer(opt, tensors, meta["optimizer"])
        for name, aux in aux_opts.items():  # a checkpoint from before they were saved leaves them fresh
            if name in meta.get("aux_optimizers", {}):
                _load_optimizer(aux, tensors, meta["aux_optimizers"][name], prefix=f"aux_{name}")
            elif is_main:
                print(f"note: {ckpt.name} holds no state for the {name} optimiser; it starts fresh", flush=True)
        start = meta["step"]
        method.on_resume(meta)
        if is_main:
            print(f"resumed from {ckpt.name} at step {start}", flush=True)

    precision = resolve_precision(cfg.mixed_precision, device)
    provenance = {"precision": PRECISION_WORDS[precision], **({"command": command} if command else {})}
    if export_only:
        if found is None:
            raise ValueError(f"{run_dir} holds no valid checkpoint to export")
        if is_main:
            # An unfinished run's card says so: its EMA is from step `start` of a cfg.iterations-step schedule.
            early = {"exported_at_step": start} if start < cfg.iterations else {}
            _export_ema(method, ema, run_dir, cfg, {**provenance, **early})
        return {"step": start, "exported": str(RunFolder(run_dir).model_dir)}

    stop = {"flag": False}

    def _request_stop(*_):
        stop["flag"] = True

    old_handlers = {}
    if is_main and threading_is_main():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old_handlers[sig] = signal.signal(sig, _request_stop)

    ckpt_extra = {"method": method.name, "student_config": _student_config(method.student)}  # lets a preview rebuild the student
    if is_main and cfg.mixed_precision == "auto":
        print(
            f"mixed precision: {'bf16 autocast' if precision == 'bf16' else 'float32 (no fast bfloat16 on this device)'}",
            flush=True,
        )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    stats_path = RunFolder(run_dir).stats_file
    t_start, last = time.time(), {}
    window: dict[str, float] = {}
    n_window = 0
    step = start
    try:
        for step in range(start, cfg.iterations):
            # 1. The method's auxiliary updates, if any, then its loss for this step (it draws its own batch; its noise
            #    comes from a step-seeded generator).
            gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 1_000_003 + step * 7 + accelerator.process_index)
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base / cfg.lr * lr_at(step, cfg)
            with autocast:
                aux_stats = auxiliary_step(method, step, gen, accelerator.num_processes)
                loss, stats = method.loss(step, gen)
            stats = {**aux_stats, **stats}
            # 2. Backward, average gradients over processes, clip, step.
            opt.zero_grad(set_to_none=True)
            loss.float().backward()
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            _average_gradients(params, accelerator.num_processes)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip else torch.tensor(0.0)
            opt.step()
            method.after_step(step)
            # 3. EMA of the student.
            ema.update(method.student, step)
            for k, v in {"loss": float(loss.detach()), "grad_norm": float(grad_norm), **stats}.items():
                window[k] = window.get(k, 0.0) + float(v)
            n_window += 1
            done = step + 1
            if is_main and (done % cfg.log_every == 0 or done == cfg.iterations):
                elapsed = time.time() - t_start
                rate = (done - start) / max(elapsed, 1e-9)
                last = {
                    "step": done,
                    "iterations": cfg.iterations,
                    **{k: v / n_window for k, v in window.items()},
                    "lr": opt.param_groups[0]["lr"],
                    "img_per_s": rate * cfg.batch_size * accelerator.num_processes,
                    "elapsed_s": elapsed,
                    "eta_s": (cfg.iterations - done) / max(rate, 1e-9),
                    "time": time.time(),
                }
                append_row(stats_path, last)
                window, n_window = {}, 0
            if is_main and (done % cfg.checkpoint_every == 0 or done == cfg.iterations):
                save_checkpoint(run_dir, done, modules, ema, opt, ckpt_extra, cfg.keep_checkpoints, aux_opts)
            if stop["flag"] or (should_stop is not None and should_stop()):
                if is_main and done % cfg.checkpoint_every != 0:
                    save_checkpoint(run_dir, done, modules, ema, opt, ckpt_extra, cfg.keep_checkpoints, aux_opts)
                if is_main:
                    append_row(stats_path, {"step": done, "event": "stopped", "time": time.time()})
                return {**last, "stopped": True}
        # 4. Export the EMA student as a model folder.
        if is_main:
            _export_ema(method, ema, run_dir, cfg, provenance)
            append_row(stats_path, {"step": cfg.iterations, "event": "done", "time": time.time()})
        accelerator.wait_for_everyone()
        return last
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)


def auxiliary_step(method, step: int, generator: torch.Generator, world: int = 1) -> dict:
    """Train a method's auxiliary networks for one step (HD's fake score): for each loss `method.auxiliary_losses`
    yields, backward, average the gradients over the processes, clip and step that network's optimiser. Returns the
    last update's stats (they join the step's logged row)."""
    auxiliary, optimizers = method.auxiliary(), method.auxiliary_optimizers()
    stats: dict = {}
    for name, loss, stats in method.auxiliary_losses(step, generator):
        opt = optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        _average_gradients(params, world)
        if auxiliary[name].grad_clip:
            torch.nn.utils.clip_grad_norm_(params, auxiliary[name].grad_clip)
        opt.step()
    return stats


def _export_ema(method, ema: EMA, run_dir: Path, cfg: TrainConfig, provenance: dict | None = None) -> None:
    """Export the EMA weights as a model folder, written beside and then swapped in (never half-written), with the
    run's `provenance` in card.json's `training` and its statistics as `training_stats.jsonl`."""
    student_state = {k: v.clone() for k, v in method.student.state_dict().items()}
    ema.copy_to(method.student)
    tmp = run_dir / f".tmp-model-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    method.export(tmp, cfg)
    card = read_card(tmp, strict=True)
    card["training"] = {**(card.get("training") or {}), **(provenance or {}), "weights": "float32"}
    write_card(tmp, card)
    if RunFolder(run_dir).stats_file.is_file():
        shutil.copyfile(RunFolder(run_dir).stats_file, tmp / "training_stats.jsonl")
    shutil.rmtree(RunFolder(run_dir).model_dir, ignore_errors=True)
    os.replace(tmp, RunFolder(run_dir).model_dir)
    method.student.load_state_dict(student_state)


def _average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Mean of every gradient over the processes in one all-reduce per (device, dtype) of one flat buffer, as DDP's
    buckets do, instead of one collective (and one cloned tensor) per parameter."""
    if world <= 1:
        return
    import torch.distributed as dist

    buckets: dict[tuple, list[torch.Tensor]] = {}
    for p in (p for p in params if p.grad is not None):
        buckets.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
    for grads in buckets.values():
        flat = torch.cat([g.reshape(-1) for g in grads])  # [sum of numels]
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def _broadcast_from_main(modules: dict) -> None:
    """Copy rank 0's parameters and buffers to every process, so all ranks train the same weights."""
    import torch.distributed as dist

    for m in modules.values():
        for t in m.state_dict().values():  # state_dict tensors share storage with the module's
            dist.broadcast(t, src=0)


def _student_config(student: torch.nn.Module) -> dict | None:
    """A diffusers model's config (plus its class name) as plain JSON, or None for other modules. A text student
    trains bound to the caption table (`demo.core.text.PromptUNet`): its UNet's config is stored, with `_state_prefix`
    naming where the UNet's weights sit in the student's state ("unet.")."""
    prefix = ""
    if getattr(student, "config", None) is None and isinstance(getattr(student, "unet", None), torch.nn.Module):
        student, prefix = student.unet, "unet."
    config = getattr(student, "config", None)
    if config is None:
        return None
    config = {"_class_name": type(student).__name__, **{k: v for k, v in dict(config).items() if not k.startswith("_")}}
    config |= {"_state_prefix": prefix} if prefix else {}
    return json.loads(json.dumps(config, default=str))  # never let an odd config value break a checkpoint


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
