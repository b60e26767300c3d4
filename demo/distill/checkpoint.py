"""Training checkpoints, written and read only here (see ARCHITECTURE.md): `checkpoint-NNNNNNN/` folders in a run folder.

Each holds `state.safetensors` (tensors `module.<name>.*` of the trainable modules, `ema.*` of the student's EMA,
`opt.*` of the main optimiser and `aux_<name>.*` of a method's own optimisers) and `meta.json` (`step`, the file's
`sha256`, the optimisers' JSON state, `method` and `student_config`: the student's class and diffusers config). A
checkpoint is written to a temporary folder and renamed, and verified by hash on load: safetensors only, never pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from demo.distill.train import EMA

CHECKPOINT_PREFIX = "checkpoint-"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _optimizer_tensors(opt: torch.optim.Optimizer, prefix: str = "opt") -> tuple[dict, dict]:
    """Split an optimiser state into flat tensors (keys `prefix.pid.name`; no dot in prefix) and a JSON-able remainder."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, meta: dict, prefix: str = "opt") -> None:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    run_dir: Path,
    step: int,
    modules: dict,
    ema: EMA,
    opt,
    extra: dict | None = None,
    keep: int = 2,
    aux_optimizers: dict | None = None,
) -> Path:
    """Modules, EMA, the main optimiser and a method's auxiliary optimisers (e.g. HD's fake score), in one file."""
    tensors = {
        f"module.{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items() for k, v in m.state_dict().items()
    }
    tensors.update({f"ema.{k}": v.cpu().contiguous() for k, v in ema.shadow.items()})
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    tensors.update(opt_tensors)
    aux_meta = {}
    for name, aux in (aux_optimizers or {}).items():
        aux_tensors, aux_meta[name] = _optimizer_tensors(aux, prefix=f"aux_{name}")
        tensors.update(aux_tensors)
    if aux_meta:
        extra = {**(extra or {}), "aux_optimizers": aux_meta}
    final = run_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
    tmp = run_dir / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "state.safetensors"))
    meta = {"step": step, "sha256": _sha256(tmp / "state.safetensors"), "optimizer": opt_meta, **(extra or {})}
    with open(tmp / "meta.json", "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # atomic: a reader sees the old checkpoint or the whole new one
    prune_checkpoints(run_dir, keep, known_valid=final)
    return final


def prune_checkpoints(run_dir: Path, keep: int, known_valid: Path | None = None) -> None:
    """Keep the newest `keep` *valid* checkpoints; corrupt ones never count towards `keep` and are removed, so a
    truncated write can never cost the older valid checkpoint a resume would need."""
    kept = 0
    for ckpt in reversed(list_checkpoints(run_dir)):
        if kept < keep and (ckpt == known_valid or _checkpoint_valid(ckpt)):
            kept += 1
        else:
            shutil.rmtree(ckpt, ignore_errors=True)


def _checkpoint_valid(ckpt: Path) -> bool:
    try:
        meta = json.loads((ckpt / "meta.json").read_text())
        return isinstance(meta, dict) and _sha256(ckpt / "state.safetensors") == meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def list_checkpoints(run_dir: Path) -> list[Path]:
    return sorted(p for p in Path(run_dir).glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir())


def latest_valid_checkpoint(run_dir: Path) -> tuple[Path, dict, dict] | None:
    """The newest checkpoint whose files are complete and whose hash matches; corrupt ones are skipped."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            meta = json.loads((ckpt / "meta.json").read_text())
            if _sha256(ckpt / "state.safetensors") != meta["sha256"]:
                continue
            return ckpt, meta, load_file(str(ckpt / "state.safetensors"))
        except (OSError, ValueError, KeyError, json.JSONDecodeError, RuntimeError):
            continue
    return None


def checkpoint_step(run_dir: str | os.PathLike) -> int | None:
    """Step of the newest valid checkpoint (hash-checked, as the loop does on resume), or None."""
    found = latest_valid_checkpoint(Path(run_dir))
    return None if found is None else int(found[1]["step"])


def load_checkpoint_student(run_dir: str | os.PathLike, teacher: str | os.PathLike | None = None, device="cpu"):
    """The EMA student of a run's newest valid checkpoint as a `LoadedModel` (for previews of an unfinished run).

    The architecture comes from the config the loop stores in each checkpoint's meta; the noise schedule and the
    class layout from the teacher's folder (JSON only), as every student shares its teacher's schedule. A text
    student (a `UNet2DConditionModel`) takes its teacher's text encoder and tokenizer, as its finished folder will,
    and is guidance-conditioned when it has LCM's `time_cond_proj_dim` input.
    """
    import inspect

    from demo.core.card import Card, read_card
    from demo.core.layout import VAE_DIR
    from demo.core.models import MODEL_CLASSES, AutoencoderKL, DDPMScheduler, LoadedModel, default_scheduler
    from demo.core.schedule import NoiseSchedule

    run_dir = Path(run_dir)
    found = latest_valid_checkpoint(run_dir)
    if found is None:
        raise ValueError(f"Run {run_dir.name} has no valid checkpoint yet.")
    _, meta, tensors = found
    config = dict(meta.get("student_config") or {})
    cls = MODEL_CLASSES.get(config.pop("_class_name", ""))
    prefix = "ema." + str(config.pop("_state_prefix", ""))  # a text student's UNet sits under "unet." in its state
    if cls is None:
        raise ValueError(f"Run {run_dir.name}'s checkpoint does not say how to rebuild its student.")
    net = cls.from_config(config)
    state = net.state_dict()
    ema = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not any(k in state for k in ema):  # never preview a randomly initialised network as the student
        raise ValueError(f"Run {run_dir.name}'s checkpoint holds no EMA weights that fit its student.")
    net.load_state_dict({**state, **{k: v.to(state[k].dtype) for k, v in ema.items() if k in state}})
    net = net.to(device).eval().requires_grad_(False)
    card, scheduler, vae = {}, default_scheduler(), None
    if teacher is not None:
        teacher = Path(teacher)
        card = read_card(teacher, strict=True)
        scheduler = DDPMScheduler.from_config(json.loads((teacher / "scheduler" / "scheduler_config.json").read_text()))
        if (teacher / VAE_DIR / "config.json").is_file():  # a latent student decodes with its teacher's VAE
            vae = AutoencoderKL.from_pretrained(teacher / VAE_DIR, use_safetensors=True).to(device).eval().requires_grad_(False)
    text = (None, None)
    if type(net).__name__ == "UNet2DConditionModel":
        from demo.core.text import load_text_parts

        if teacher is None:
            raise ValueError(f"Run {run_dir.name}'s text student needs its teacher's text encoder: give the teacher folder.")
        text = load_text_parts(teacher, device, net.config.cross_attention_dim)
        w_conditioned = net.config.get("time_cond_proj_dim") is not None
    else:
        w_conditioned = "guidance" in inspect.signature(net.forward).parameters
    card = Card.from_dict(
        {**card, "name": f"{run_dir.name}@{meta['step']}", "kind": "student", "w_conditioned": w_conditioned, "steps": None}
    )
    return LoadedModel(
        card.name,
        run_dir,
        net,
        NoiseSchedule.from_scheduler(scheduler),
        scheduler.config.prediction_type,
        card,
        dict(scheduler.config),
        vae=vae,
        text_encoder=text[0],
        tokenizer=text[1],
    )
