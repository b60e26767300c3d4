"""`python -m analysis.dash_report --students DIR[,DIR…] [--teacher DIR] [--n 1000] [--steps 50]`

The DASH-paper-style table (Al Shafi et al.): for the teacher and every student — parameters and their ratio to the
teacher's, Fréchet distance in the Fashion-MNIST classifier's feature space (not FID), class accuracy, precision and
recall at `--steps`-step CFG DDIM with W = `--guidance` — next to the guidance-branch statistics ρ, cos(Δ) and Gap-MSE
averaged over `--timesteps` timesteps on held-out test images (`analysis.branches`). It also reports the share of
DASH's gain over cond-only KD that `L_un` accounts for: (metric(dash-no-uncond) − metric(dash)) /
(metric(kd-cond) − metric(dash)), when those three runs are present.

Writes `OUT/dash.json`, `OUT/dash.md`, the per-timestep ρ / cos(Δ) / Gap-MSE curves `OUT/dash-branches.html` and
`.png`, and stores each model's row in its card.json. Each model's row is cached in `OUT/dash-rows/NAME.json`
(keyed by its weights' size and time and the settings), so models added later cost only their own evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from analysis.branches import BranchGap, branch_gap_curve, branch_timesteps
from analysis.classifier import load_classifier
from analysis.evaluate import (
    add_teacher_arg,
    cached_row,
    evaluate_model,
    markdown_table,
    store_card_metrics,
    weights_key,
)
from analysis.figure_png import write_report
from analysis.metrics import load_reference
from demo.catalog import named_teacher
from demo.models import ModelFolderError, check_model_folder, load_model_folder

RESULTS = Path(__file__).resolve().parent.parent / "assets" / "results"
COLUMNS = ("model", "method", "params", "ratio", "frechet_distance", "accuracy", "precision", "recall", "rho", "cos", "gap_mse", "nfe")
# Sampling seconds stay in the JSON but not in the table: evaluation runs share the CPU with other work, so their wall
# times are not latencies; `--latency-steps` measures those.
BRANCH_KEYS = ("t", "rho", "cos", "gap_mse", "norm_student", "norm_teacher", "dot", "sq_teacher")


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.net.parameters())


def model_row(model, teacher, settings: dict, classifier, reference, x0, labels) -> dict:
    """One table row: quality at `settings` plus the branch statistics against `teacher` (curves included)."""
    q = evaluate_model(model, settings["n"], settings["steps"], settings["guidance"], "ddim", settings["seed"], "all",
                       settings["batch_size"], classifier, reference, bf16=settings["bf16"])  # fmt: skip
    gap = branch_gap_curve(model, teacher, x0, labels, branch_timesteps(settings["timesteps"]), seed=settings["seed"])
    return {
        "model": model.name,
        "method": model.card.method,
        "params": parameter_count(model),
        **{k: q[k] for k in ("frechet_distance", "accuracy", "precision", "recall", "kid", "nfe", "seconds", "img_per_s")},
        **gap.summary(settings["guidance"]),
        "curves": {k: np.asarray(getattr(gap, k)).tolist() for k in BRANCH_KEYS},
    }


def gain_share(rows: dict, metric: str) -> float | None:
    """Share of DASH's gain over cond-only KD on `metric` that is lost without L_un (1: all of it, 0: none).

    Each metric is first turned into an error (lower is better): the Fréchet distance as is, ρ as |ρ − 1| (the
    teacher's ρ is 1, too large is as wrong as too small), cos(Δ) as 1 − cos.
    """
    error = {"frechet_distance": lambda v: v, "rho": lambda v: abs(v - 1.0), "cos": lambda v: 1.0 - v}[metric]
    by_method = {r["method"]: r for r in rows.values()}
    if not {"dash", "kd-cond", "dash-no-uncond"} <= by_method.keys():
        return None
    d, kd, nu = (error(by_method[m][metric]) for m in ("dash", "kd-cond", "dash-no-uncond"))
    return None if abs(kd - d) < 1e-12 else (nu - d) / (kd - d)


def markdown(rows: list[dict], settings: dict, shares: dict) -> str:
    table = markdown_table(rows, COLUMNS) + "\n"
    note = (f"\n{settings['steps']}-step DDIM, W = {settings['guidance']:g} (CFG: 2 NFE per step), n = {settings['n']} samples, "
            f"seed {settings['seed']}{', bf16 autocast' if settings['bf16'] else ''}; ρ / cos(Δ) / Gap-MSE averaged over "
            f"{settings['timesteps']} timesteps on {settings['branch_images']} held-out test images. `ratio` = teacher parameters / "
            "model parameters. Fréchet distance uses the Fashion-MNIST classifier's features (not FID).\n")  # fmt: skip
    for key, v in shares.items():
        if v is not None:
            note += f"\nShare of DASH's gain over cond-only KD that L_un accounts for ({key}): {v:.2f}."
    return table + note + "\n"


LATENCY_COLUMNS = ("model", "steps", "nfe", "params", "weights_mb", "latency_ms_b1", "latency_ms_b16", "img_per_s", "peak_rss_delta_mb",
                   "gflops_per_image", "param_ratio", "latency_ratio_b1", "latency_ratio_b16")  # fmt: skip


def latency_rows(models: dict, steps: int, guidance: float) -> dict:
    """The teacher and every `dash` student (`models`: folder → loaded model) timed at `steps`-step CFG DDIM (batch 1
    and 16), with `analysis.bench`."""
    from analysis.bench import Target, load_average, machine_info, measure_row

    measured = []
    for folder, model in models.items():
        if model.card.kind == "teacher" or model.card.method == "dash":
            target = Target(model.name, folder, model.card.kind, model.card.method, steps, False, None)
            print(f"{model.name}: timing {steps}-step CFG sampling …", file=sys.stderr, flush=True)
            measured.append(measure_row(model, target, quick=False, guidance=guidance))
    teacher = measured[0]
    for r in measured:
        r["weights_mb"] = round(r["params"] * 4 / 2**20, 2)  # fp32
        r["param_ratio"] = round(teacher["params"] / r["params"], 2)
        for b in ("b1", "b16"):
            r[f"latency_ratio_{b}"] = round(teacher[f"latency_ms_{b}"] / r[f"latency_ms_{b}"], 2)
    return {"machine": {**machine_info(torch.get_num_threads(), "cpu", False), "load_avg_end": load_average()}, "rows": measured}


def latency_markdown(latency: dict) -> str:
    table = "\n" + markdown_table(latency["rows"], LATENCY_COLUMNS) + "\n"
    m = latency["machine"]
    return table + (f"\nCFG DDIM at W = 2, fp32, {m.get('threads')} CPU threads ({m.get('cpu', '')}), {m.get('date', '')}; latencies are "
                          "medians after warm-up; `peak_rss_delta_mb`: the rise of the process's peak RSS while sampling a batch of 16; "
                          "`weights_mb`: fp32 parameters.\n")  # fmt: skip


def branch_figure(rows: list[dict]):
    from analysis.plots import plot_branch_gap

    curves = {}
    for r in rows:
        c = r["curves"]
        curves[r["model"]] = BranchGap(*(np.asarray(c[k]) for k in BRANCH_KEYS))
    return plot_branch_gap(curves, title="DASH and its baselines: guidance branches against the teacher (held-out images)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.dash_report", description=__doc__.splitlines()[0])
    add_teacher_arg(p)
    p.add_argument("--students", required=True, help="comma-separated student model folders")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--timesteps", type=int, default=20)
    p.add_argument("--branch-images", type=int, default=256)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder (default: the Debian package's / FASHION_MNIST_DIR)")
    p.add_argument("--latency-steps", type=int, default=0,
                   help="also time CFG DDIM sampling at this many steps for the teacher and the DASH student(s) (analysis.bench's "
                        "latency, peak memory and FLOPs; run it on a quiet machine). 0: skip")  # fmt: skip
    p.add_argument("--no-png", action="store_true", help="skip the PNG (the HTML figure is always written)")
    p.add_argument("--no-cards", action="store_true", help="do not store the rows in the models' card.json")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    settings = {k: getattr(args, k) for k in ("n", "steps", "guidance", "seed", "batch_size", "timesteps", "branch_images", "bf16")}
    out = Path(args.out)
    cache = out / "dash-rows"
    students = [Path(s) for s in args.students.split(",") if s]
    try:
        args.teacher = str(args.teacher or named_teacher(students))
        folders = [Path(args.teacher)] + students
        for folder in folders:  # every folder is checked before any model is evaluated
            check_model_folder(folder)
        teacher = load_model_folder(args.teacher)
        from demo.lab import reference_images

        x0, labels = reference_images(args.branch_images, seed=12345, split="test", folder=args.data_dir)
        classifier, reference = load_classifier(), load_reference()
        rows, models, teacher_key = {}, {}, weights_key(args.teacher)
        for folder in folders:
            model = models[folder] = teacher if folder == Path(args.teacher) else load_model_folder(folder)
            key = {"weights": weights_key(folder), "teacher": teacher_key, **settings}
            started = time.time()
            row, computed = cached_row(cache, model.name, key, lambda model=model: model_row(model, teacher, settings, classifier, reference, x0, labels))
            if computed:
                print(f"{model.name}: evaluated in {time.time() - started:.0f} s", file=sys.stderr, flush=True)
            row["method"] = model.card.method  # read from the card each time (cards may be corrected later)
            rows[model.name] = row
            print(json.dumps({k: row[k] for k in COLUMNS if k in row}), flush=True)
    except (ValueError, ModelFolderError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    teacher_params = rows[teacher.name]["params"]
    for r in rows.values():
        r["ratio"] = teacher_params / r["params"]
    latency = latency_rows(models, args.latency_steps, args.guidance) if args.latency_steps else None
    shares = {m: gain_share(rows, m) for m in ("frechet_distance", "rho", "cos")}
    ordered = list(rows.values())
    meta = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "threads": torch.get_num_threads(), "settings": settings}
    report = {"meta": meta, "rows": ordered, "l_un_gain_share": shares}
    if latency is None and (out / "dash.json").is_file():  # keep the last measured latency table when not re-measured
        latency = json.loads((out / "dash.json").read_text()).get("latency")
    if latency is not None:
        report["latency"] = latency
    written = write_report(out, "dash", report, markdown(ordered, settings, shares) + (latency_markdown(latency) if latency else ""),
                           branch_figure(ordered), "dash-branches", 1200, 450, png=not args.no_png)  # fmt: skip
    for folder in [] if args.no_cards else folders:
        row = rows.get(models[folder].name) if folder in models else None
        if row is not None:
            store_card_metrics(folder, f"ddim{args.steps}_W{args.guidance:g}_dash_report", {k: row[k] for k in COLUMNS[2:] if k in row})
    print(json.dumps({"written": [str(w) for w in written], "l_un_gain_share": shares}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
