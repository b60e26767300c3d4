"""`python -m analysis.dash_report --students DIR[,DIR…] [--teacher DIR] [--n 2000] [--seeds 0,1] [--steps 50]`

The DASH-paper-style table (Al Shafi et al.): for the teacher and every student — parameters and their ratio to the
teacher's, Fréchet distance in the Fashion-MNIST classifier's feature space (not FID), class accuracy, precision and
recall at `--steps`-step CFG DDIM with W = `--guidance` — next to the guidance-branch statistics ρ, cos(Δ) and Gap-MSE
averaged over `--timesteps` timesteps on held-out test images (`analysis.branches`). It also reports the share of
DASH's gain over cond-only KD that `L_un` accounts for: (metric(dash-no-uncond) − metric(dash)) /
(metric(kd-cond) − metric(dash)), when those three runs are present.

Sample quality is judged under `analysis.protocol`: every model at the same `--seeds` (the same noise), every number
the mean over them, `fd_vs_teacher` the mean of the per-seed Fréchet-distance ratios to the teacher (plain CFG
against plain CFG) with a paired bootstrap interval, and `accuracy_diff` beside it.

Writes `OUT/dash.json`, `OUT/dash.md`, the per-timestep ρ / cos(Δ) / Gap-MSE curves `OUT/dash-branches.html` and
`.png`, and stores each model's row in its card.json. Samples are cached as per-seed feature sets
(`analysis.protocol.FEATURES_DIR`) and each model's branch statistics in `OUT/dash-rows/NAME.json` (keyed by the
protocol, its weights and the settings), so models or seeds added later cost only their own evaluation.
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
from analysis.evaluate import add_teacher_arg, cached_row, evaluate_seeds, markdown_table, store_card_metrics, weights_key
from analysis.figure_png import write_report
from analysis.metrics import load_reference
from analysis.protocol import (
    BOOTSTRAP,
    PROTOCOL,
    add_bf16_argument,
    bf16_for,
    bf16_text,
    compare,
    parse_seeds,
    ratio_columns,
    real_pool,
    report_meta,
    with_interval,
)
from demo.core.card import named_teacher
from demo.core.models import ModelFolderError, check_model_folder, load_model_folder
from demo.core.paths import RESULTS_DIR
from demo.core.samplers import sampler_names

RESULTS = RESULTS_DIR
COLUMNS = (
    "model",
    "method",
    "params",
    "ratio",
    "frechet_distance",
    "fd_vs_teacher",
    "accuracy",
    "accuracy_diff",
    "precision",
    "recall",
    "rho",
    "cos",
    "gap_mse",
    "cond_mse",
    "uncond_mse",
    "nfe",
)
INTERVAL_COLUMNS = ("fd_vs_teacher", "accuracy_diff")  # printed as "value [low, high]"
QUALITY_KEYS = (
    "frechet_distance",
    "accuracy",
    "precision",
    "recall",
    "kid",
    "nfe",
    "seconds",
    "img_per_s",
    "seeds",
    "fd_by_seed",
    "accuracy_by_seed",
)
# Sampling seconds stay in the JSON but not in the table: evaluation runs share the CPU with other work, so their wall
# times are not latencies; `--latency-steps` measures those.
BRANCH_KEYS = ("t", "rho", "cos", "gap_mse", "norm_student", "norm_teacher", "dot", "sq_teacher", "cond_mse", "uncond_mse")
BRANCH_STATS = 2  # the branch rows' version: 2 added each branch's own error (cond_mse, uncond_mse); older rows recompute


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.net.parameters())


def branch_row(model, teacher, settings: dict, x0, labels) -> dict:
    """The branch statistics against `teacher` (curves included) and the parameter count: no sampling."""
    gap = branch_gap_curve(model, teacher, x0, labels, branch_timesteps(settings["timesteps"]), seed=settings["seeds"][0])
    return {
        "model": model.name,
        "method": model.card.method,
        "params": parameter_count(model),
        **gap.summary(settings["guidance"]),
        "curves": {k: np.asarray(getattr(gap, k)).tolist() for k in BRANCH_KEYS},
        "protocol": PROTOCOL,
    }


def quality_row(folder, model, settings: dict, classifier, reference, log=None, teacher: bool = False) -> tuple[dict, list]:
    """(quality numbers averaged over the seeds, per-seed feature sets) at `settings` (`analysis.evaluate.evaluate_seeds`);
    `teacher` decides the precision under `--bf16 teacher`."""
    q, sets = evaluate_seeds(
        folder,
        model,
        settings["seeds"],
        settings["n"],
        settings["steps"],
        settings["guidance"],
        settings["sampler"],
        "all",
        settings["batch_size"],
        classifier,
        reference,
        bf16=bf16_for(settings["bf16"], teacher),
        clip_x0=settings["clip_x0"],
        log=log,
    )
    return {k: q[k] for k in QUALITY_KEYS if k in q}, sets


def sampler_text(settings: dict) -> str:
    """The sampler in words: our trailing DDIM from t = 999, or DASH's protocol (leading timesteps, clamped x0)."""
    sampler, clip = settings.get("sampler", "ddim"), settings.get("clip_x0", False)
    if sampler == "ddim-leading":
        return "DDIM with leading timesteps (from t = 980)" + (", x0 clamped to [-1, 1] (DASH's protocol)" if clip else "")
    return ("DDIM (trailing timesteps, from t = 999)" if sampler == "ddim" else sampler) + (", x0 clamped" if clip else "")


def protocol_name(settings: dict) -> str:
    """The sampling protocol in a card's metric key: `ddim50_W2`, or `ddim-leading-clip50_W2` for DASH's protocol."""
    clip = "-clip" if settings.get("clip_x0") else ""
    return f"{settings.get('sampler', 'ddim')}{clip}{settings['steps']}_W{settings['guidance']:g}"


def add_teacher_ratios(rows: list[dict], sets: list, pool, reference, replicates: int = BOOTSTRAP) -> None:
    """`fd_vs_teacher` and `accuracy_diff` of each row against `rows[0]` (the teacher), with paired bootstrap intervals."""
    for r, s in zip(rows, sets):
        c = compare(s, sets[0], r["seeds"], pool, reference, replicates)
        r.update(ratio_columns(c, "teacher"))


def display_row(row: dict) -> dict:
    """A row as the table prints it: each ratio with its bootstrap interval in one cell."""
    return {**row, **{k: with_interval(row.get(k), row.get(f"{k}_lo"), row.get(f"{k}_hi")) for k in INTERVAL_COLUMNS}}


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
    table = markdown_table([display_row(r) for r in rows], COLUMNS) + "\n"
    seeds = settings["seeds"]
    seed_text = (
        f"seed {seeds[0]}"
        if len(seeds) == 1
        else f"every number the mean over seeds {', '.join(map(str, seeds))} (the same noise for every model)"
    )
    note = (
        f"\n{settings['steps']}-step {sampler_text(settings)}, W = {settings['guidance']:g} (CFG: 2 NFE per step), n = {settings['n']} samples per seed, "
        f"{seed_text}{bf16_text(settings['bf16'])}. `fd_vs_teacher`: the mean of the per-seed Fréchet-distance "
        f"ratios to the teacher, `accuracy_diff`: accuracy minus the teacher's, each with a {settings.get('bootstrap', BOOTSTRAP)}-replicate "
        "paired bootstrap 95% interval [low, high] (`analysis.protocol`); precision/recall against an equal number of real images. "
        f"ρ / cos(Δ) / Gap-MSE averaged over "
        f"{settings['timesteps']} timesteps on {settings['branch_images']} held-out test images; `cond_mse` / `uncond_mse`: each "
        "branch's own ε error against the teacher's, E(ε_c^S − ε_c^T)² and E(ε_u^S − ε_u^T)², on the same inputs. `ratio` = teacher parameters / "
        "model parameters. Fréchet distance uses the Fashion-MNIST classifier's features (not FID).\n"
    )
    for key, v in shares.items():
        if v is not None:
            note += f"\nShare of DASH's gain over cond-only KD that L_un accounts for ({key}): {v:.2f}."
    return table + note + "\n"


LATENCY_COLUMNS = (
    "model",
    "steps",
    "nfe",
    "params",
    "weights_mb",
    "latency_ms_b1",
    "latency_ms_b16",
    "img_per_s",
    "peak_rss_delta_mb",
    "gflops_per_image",
    "param_ratio",
    "latency_ratio_b1",
    "latency_ratio_b16",
)


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
    return table + (
        f"\nCFG DDIM at W = 2, fp32, {m.get('threads')} CPU threads ({m.get('cpu', '')}), {m.get('date', '')}; latencies are "
        "medians after warm-up; `peak_rss_delta_mb`: the rise of the process's peak RSS while sampling a batch of 16; "
        "`weights_mb`: fp32 parameters.\n"
    )


def branch_figure(rows: list[dict]):
    from analysis.plots import plot_branch_gap

    curves = {}
    for r in rows:
        c = r["curves"]
        curves[r["model"]] = BranchGap(*(np.asarray(c[k]) if k in c else None for k in BRANCH_KEYS))
    return plot_branch_gap(curves, title="DASH and its baselines: guidance branches against the teacher (held-out images)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.dash_report", description=__doc__.splitlines()[0])
    add_teacher_arg(p)
    p.add_argument("--students", required=True, help="comma-separated student model folders")
    p.add_argument("--n", type=int, default=2000, help="samples per model and seed")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument(
        "--sampler",
        default="ddim",
        choices=sampler_names(),
        help="ddim: trailing timesteps from t = 999 (ours); ddim-leading with --clip-x0: DASH's evaluation protocol",
    )
    p.add_argument("--clip-x0", action="store_true", help="clamp each step's x0 prediction to [-1, 1] (DASH's protocol)")
    p.add_argument(
        "--seeds", "--seed", default="0,1", help="comma-separated seeds, the same for every model; numbers are means over them"
    )
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help="bootstrap replicates for the intervals")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--timesteps", type=int, default=20)
    p.add_argument("--branch-images", type=int, default=256)
    add_bf16_argument(p)
    p.add_argument(
        "--data-dir", default=None, help="Fashion-MNIST IDX folder (default: the Debian package's / FASHION_MNIST_DIR)"
    )
    p.add_argument(
        "--latency-steps",
        type=int,
        default=0,
        help="also time CFG DDIM sampling at this many steps for the teacher and the DASH student(s) (analysis.bench's "
        "latency, peak memory and FLOPs; run it on a quiet machine). 0: skip",
    )
    p.add_argument("--no-png", action="store_true", help="skip the PNG (the HTML figure is always written)")
    p.add_argument("--no-cards", action="store_true", help="do not store the rows in the models' card.json")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    out = Path(args.out)
    cache = out / "dash-rows"
    students = [Path(s) for s in args.students.split(",") if s]
    try:
        settings = {
            k: getattr(args, k)
            for k in (
                "n",
                "steps",
                "guidance",
                "sampler",
                "clip_x0",
                "batch_size",
                "timesteps",
                "branch_images",
                "bf16",
                "bootstrap",
            )
        }
        settings["seeds"] = parse_seeds(args.seeds)
        if args.n < 2 or args.bootstrap < 10:
            raise ValueError(f"--n must be at least 2 and --bootstrap at least 10, got {args.n} and {args.bootstrap}")
        args.teacher = str(args.teacher or named_teacher(students))
        folders = [Path(args.teacher)] + students
        for folder in folders:  # every folder is checked before any model is evaluated
            check_model_folder(folder)
        teacher = load_model_folder(args.teacher)
        from demo.core.data import reference_images

        x0, labels = reference_images(args.branch_images, seed=12345, split="test", folder=args.data_dir)
        classifier, reference = load_classifier(), load_reference()
        rows, sets, models, teacher_key = {}, [], {}, weights_key(args.teacher)
        branch_settings = {k: settings[k] for k in ("guidance", "timesteps", "branch_images")} | {"seed": settings["seeds"][0]}
        log = lambda text: print(text, file=sys.stderr, flush=True)
        for folder in folders:
            model = models[folder] = teacher if folder == Path(args.teacher) else load_model_folder(folder)
            key = {"protocol": PROTOCOL, "branch_stats": BRANCH_STATS, "weights": weights_key(folder), "teacher": teacher_key}
            key |= branch_settings
            started = time.time()
            row, computed = cached_row(
                cache, model.name, key, lambda model=model: branch_row(model, teacher, settings, x0, labels)
            )
            if computed:
                print(f"{model.name}: branch statistics in {time.time() - started:.0f} s", file=sys.stderr, flush=True)
            q, model_sets = quality_row(folder, model, settings, classifier, reference, log, teacher=model is teacher)
            row = {
                **row,
                **q,
                "method": model.card.method,
            }  # the method read from the card each time (cards may be corrected later)
            rows[model.name] = row
            sets.append(model_sets)
            print(json.dumps({k: row[k] for k in COLUMNS if k in row}), flush=True)
    except (ValueError, ModelFolderError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    add_teacher_ratios(list(rows.values()), sets, real_pool(reference, classifier), reference, args.bootstrap)
    teacher_params = rows[teacher.name]["params"]
    for r in rows.values():
        r["ratio"] = teacher_params / r["params"]
    latency = latency_rows(models, args.latency_steps, args.guidance) if args.latency_steps else None
    shares = {m: gain_share(rows, m) for m in ("frechet_distance", "rho", "cos")}
    ordered = list(rows.values())
    meta = report_meta(settings=settings)
    report = {"meta": meta, "rows": ordered, "l_un_gain_share": shares}
    if latency is None and (out / "dash.json").is_file():  # keep the last measured latency table when not re-measured
        latency = json.loads((out / "dash.json").read_text()).get("latency")
    if latency is not None:
        report["latency"] = latency
    written = write_report(
        out,
        "dash",
        report,
        markdown(ordered, settings, shares) + (latency_markdown(latency) if latency else ""),
        branch_figure(ordered),
        "dash-branches",
        1200,
        450,
        png=not args.no_png,
    )
    for folder in [] if args.no_cards else folders:
        row = rows.get(models[folder].name) if folder in models else None
        if row is not None:
            keys = (*COLUMNS[2:], "fd_vs_teacher_lo", "fd_vs_teacher_hi", "seeds", "protocol")
            store_card_metrics(folder, f"{protocol_name(settings)}_dash_report", {k: row[k] for k in keys if k in row})
    print(json.dumps({"written": [str(w) for w in written], "l_un_gain_share": shares}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
