"""`python -m analysis.fingerprint [--models assets/models] [--out FILE.json]`

A fingerprint of what the shipped models sample: for every model folder, sha256 of the float32 images of a few fixed
runs (n = 4, seed 0, W = 2; the model's own steps with DDIM, and 2 steps with DDIM and DPM-Solver++), plus a few runs
through the options (ancestral samplers, guidance interval, clip_x0, bf16) on the teacher and a w-conditioned
student. Run it at two commits and diff the JSON: equal hashes mean bit-identical samples. Single-threaded
(`torch.set_num_threads(1)`), so the result does not depend on the machine's core count or on other processes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from demo.core.paths import MODELS_DIR

N, SEED, W = 4, 0, 2.0
DEFAULT_STEPS = 64  # a model without a distilled step count samples with the app's and demo.sample's default
TWO_STEP_SAMPLERS = ("ddim", "dpmsolver++")
# Runs through the sampling options, on one model of each kind (a CFG teacher and a w-conditioned student).
OPTION_RUNS = {
    "ddpm": {"sampler": "ddpm", "steps": 8},
    "stochastic": {"sampler": "stochastic", "steps": 8},
    "ddim-leading": {"sampler": "ddim-leading", "steps": 8},
    "interval": {"sampler": "ddim", "steps": 8, "interval": (200, 800)},
    "clip_x0": {"sampler": "ddim", "steps": 8, "clip_x0": True, "guidance": 5.0},
    "bf16": {"sampler": "ddim", "steps": 8, "bf16": True},
    "class3-W0": {"sampler": "ddim", "steps": 8, "class_label": 3, "guidance": 0.0},
}
OPTION_MODELS = ("fmnist-teacher", "fmnist-guided", "fmnist-pd-4")


def digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()


def runs_for(card) -> dict[str, dict]:
    steps = int(card.steps) if card.steps else DEFAULT_STEPS
    runs = {f"default-{steps}": {"sampler": "ddim", "steps": steps}}
    runs.update({f"2step-{s}": {"sampler": s, "steps": 2} for s in TWO_STEP_SAMPLERS})
    return runs


def fingerprint(models_dir: Path, only: list[str] | None = None) -> dict:
    from demo.core.generate import generate
    from demo.core.models import load_model_folder

    out = {}
    for folder in sorted(p for p in models_dir.iterdir() if (p / "card.json").is_file()):
        if only and folder.name not in only:
            continue
        model = load_model_folder(folder)
        runs = runs_for(model.card)
        if folder.name in OPTION_MODELS:
            runs.update(OPTION_RUNS)
        rows = {}
        for key, run in runs.items():
            run = dict(run)
            kwargs = {"class_label": run.pop("class_label", "all"), "guidance": run.pop("guidance", W), **run}
            g = generate(model, N, seed=SEED, **kwargs)
            rows[key] = {"sha256": digest(g.images), "nfe": g.nfe, "labels": g.labels.tolist()}
        out[folder.name] = {"w_conditioned": bool(model.card.w_conditioned), "steps": model.card.steps, "runs": rows}
        print(f"{folder.name}: {len(rows)} runs", file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.fingerprint", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=MODELS_DIR)
    p.add_argument("--only", nargs="*", default=None, help="model folder names (default: every folder)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here (default: stdout)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # one thread: reductions run in one order, whatever the machine
    start = time.perf_counter()
    result = {"n": N, "seed": SEED, "guidance": W, "torch": torch.__version__, "models": fingerprint(args.models, args.only)}
    text = json.dumps(result, indent=1, sort_keys=True) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    print(
        f"{sum(len(m['runs']) for m in result['models'].values())} runs in {time.perf_counter() - start:.0f} s", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
