"""`python -m analysis.hd_report --students DIR[,DIR…] [--sketch DIR] [--teacher DIR] [--n 2000] [--guidance 2] [--seeds 0,1]`

Hierarchical Distillation's results (Cheng et al. 2025): the teacher at `--teacher-steps` CFG DDIM steps, the one-step
sketch (trajectory distillation only) and the refined one-step students (DMD-only, HD with the standard
discriminator, HD with the Adaptive Weighted Discriminator), each at its own step count and W = `--guidance`:
Fréchet distance in the Fashion-MNIST classifier's features (not FID) and its ratio to the teacher's, accuracy,
precision, recall, per-class coverage (recall within each class: mode collapse shows there first), and the radial
power spectrum with its high-frequency energy share (detail the sketch loses).

Judged under `analysis.protocol`: every number in the table is the mean over `--seeds` (the same seeds for every
model, so teacher and students see the same noise); `fd_vs_teacher` and `fd_vs_sketch` are the means of the per-seed
ratios with a paired bootstrap interval, and a second table gives each seed's Fréchet distance and its ratios at that
seed (HD is asked to beat its sketch at every seed). Precision, recall and per-class coverage compare equal numbers
of real and generated images.

Writes `OUT/hd.json`, `OUT/hd.md` and the figure `OUT/hd-spectrum.html` and `.png` (radial spectra, and the
per-class coverage). Each (model weights, settings, seed, n) is sampled once: its features and spectrum are cached
(`analysis.protocol.FEATURES_DIR`), so re-running or adding a seed or a model never re-samples what is there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from analysis.classifier import load_classifier
from analysis.evaluate import add_teacher_arg, markdown_table
from analysis.figure_png import write_html, write_png, write_report
from analysis.metrics import equal_size_subsample, load_reference, precision_recall
from analysis.plots import plot_token_maps
from analysis.protocol import (
    BOOTSTRAP,
    PROTOCOL,
    add_bf16_argument,
    bf16_for,
    bf16_text,
    compare,
    feature_metrics,
    parse_seeds,
    ratio_columns,
    real_pool,
    report_meta,
    sample_features,
    with_interval,
)
from analysis.spectrum import HF_CUTOFF
from demo.core.card import generator_init, named_teacher, read_card
from demo.core.layout import is_model_folder
from demo.core.models import ModelFolderError, check_model_folder, load_model_folder
from demo.core.paths import RESULTS_DIR

RESULTS = RESULTS_DIR
COLUMNS = (
    "model",
    "method",
    "steps",
    "nfe",
    "frechet_distance",
    "fd_vs_teacher",
    "fd_vs_sketch",
    "accuracy",
    "precision",
    "recall",
    "min_class_recall",
    "hf_share",
    "hf_gap",
)
INTERVAL_COLUMNS = ("fd_vs_teacher", "fd_vs_sketch")  # printed as "value [low, high]"


def per_class_recall(
    reference: dict, feats: torch.Tensor, labels: torch.Tensor, num_classes: int = 10, seed: int = 0
) -> list[float | None]:
    """Recall of each class's generated samples against as many of that class's reference images, subsampled with
    `seed` (`analysis.metrics.equal_size_subsample`; None: too few of either)."""
    real_idx, fake_idx = equal_size_subsample(
        reference["subset_labels"], labels, len(reference["subset_feats"]), len(feats), seed
    )
    ref_f, ref_y = reference["subset_feats"][real_idx], reference["subset_labels"][real_idx]
    feats, labels = feats[fake_idx], labels[fake_idx]
    out = []
    for c in range(num_classes):
        real, fake = ref_f[ref_y == c], feats[labels == c]
        out.append(precision_recall(real, fake)[1] if min(len(real), len(fake)) > 5 else None)
    return out


def model_row(model, steps: int, fs, reference, seed: int) -> dict:
    """Quality, per-class coverage and the radial spectrum of one model's feature set at one seed
    (`analysis.protocol.sample_features`)."""
    m = feature_metrics(fs, reference, seed)
    coverage = per_class_recall(reference, fs.feats, fs.labels, seed=seed)
    return {
        "model": model.name,
        "method": model.card.method,
        "steps": steps,
        "nfe": fs.nfe,
        **{k: m[k] for k in ("frechet_distance", "accuracy", "precision", "recall", "kid", "diversity")},
        "class_recall": coverage,
        "min_class_recall": min((c for c in coverage if c is not None), default=None),
        "hf_share": fs.hf_share,
        "spectrum": {"freq": fs.spectrum_freq.tolist(), "power": fs.spectrum_power.tolist()},
        "seconds": fs.seconds,
        "protocol": PROTOCOL,
    }


MEAN_KEYS = ("frechet_distance", "accuracy", "precision", "recall", "kid", "diversity", "min_class_recall", "hf_share", "seconds")


def mean_over_seeds(seed_rows: list[dict], seeds: list[int]) -> dict:
    """One model's rows at several seeds folded into one: numbers, per-class recall and spectrum averaged; per-seed FD kept."""
    first = seed_rows[0]
    out = {**first, **{k: float(np.mean([r[k] for r in seed_rows])) for k in MEAN_KEYS if first.get(k) is not None}}
    out["class_recall"] = [
        None
        if any(r["class_recall"][c] is None for r in seed_rows)
        else float(np.mean([r["class_recall"][c] for r in seed_rows]))
        for c in range(len(first["class_recall"]))
    ]
    out["spectrum"] = {
        "freq": first["spectrum"]["freq"],
        "power": np.mean([r["spectrum"]["power"] for r in seed_rows], axis=0).tolist(),
    }
    out["seeds"] = list(seeds)
    out["fd_by_seed"] = [r["frechet_distance"] for r in seed_rows]
    return out


def add_relative(rows: list[dict], sets: list | None = None, pool=None, reference=None, replicates: int = BOOTSTRAP) -> None:
    """Each row's Fréchet distance over the teacher's (`rows[0]`) and over the sketch's (`rows[1]`), paired seed by seed,
    and its high-frequency share's distance from the teacher's.

    With the rows' per-seed feature sets (`sets[i]` for `rows[i]`), `fd_vs_teacher` and `fd_vs_sketch` are the means
    of the per-seed ratios with paired bootstrap intervals (`analysis.protocol.compare`); without them, the ratio of
    the means.
    """
    teacher = rows[0]
    for i, r in enumerate(rows):
        r["hf_gap"] = abs(r["hf_share"] - teacher["hf_share"])
        for name, j in (("teacher", 0), ("sketch", 1)):
            if j >= len(rows) or i == j:
                if i == j:
                    r[f"fd_vs_{name}"] = 1.0
                    r[f"fd_vs_{name}_by_seed"] = [1.0] * len(r.get("fd_by_seed", [0]))
                continue
            if sets is None:
                r[f"fd_vs_{name}"] = r["frechet_distance"] / rows[j]["frechet_distance"]
                if "fd_by_seed" in r:
                    r[f"fd_vs_{name}_by_seed"] = [a / b for a, b in zip(r["fd_by_seed"], rows[j]["fd_by_seed"])]
                continue
            c = compare(sets[i], sets[j], r["seeds"], pool, reference, replicates)
            r.update(ratio_columns(c, name, accuracy=name == "teacher"))


def spectrum_figure(rows: list[dict], class_names: list[str] | None = None):
    """Left: radial power spectra (log power); right: per-class recall (coverage), one trace per model."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from analysis.plots import _layout, _palette

    colours = _palette(len(rows))
    names = class_names or [str(c) for c in range(10)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Radial power spectrum", "Per-class coverage (recall within each class)"])
    for r, colour in zip(rows, colours):
        label = f"{r['model']} ({r['steps']} step{'s' if r['steps'] > 1 else ''})"
        pts = [
            (f, q) for f, q in zip(r["spectrum"]["freq"], r["spectrum"]["power"]) if f > 0
        ]  # the mean (DC) is removed: no power at 0
        fig.add_trace(
            go.Scatter(
                x=[f for f, _ in pts],
                y=[q for _, q in pts],
                mode="lines",
                name=label,
                legendgroup=label,
                line={"color": colour},
                hovertemplate=f"{label}<br>%{{x:.3f}} cycles/px: %{{y:.3g}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Bar(
                x=names,
                y=[c if c is not None else float("nan") for c in r["class_recall"]],
                name=label,
                legendgroup=label,
                showlegend=False,
                marker={"color": colour},
            ),
            row=1,
            col=2,
        )
    fig.add_vline(x=HF_CUTOFF, line={"dash": "dot", "color": "grey"}, row=1, col=1)
    fig.update_xaxes(title="frequency (cycles per pixel)", row=1, col=1)
    fig.update_yaxes(title="power", type="log", row=1, col=1)
    fig.update_yaxes(title="recall", range=[0, 1], row=1, col=2)
    fig = _layout(fig, "Hierarchical distillation: detail (spectrum) and coverage", height=440)
    fig.update_layout(
        barmode="group",
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "center", "x": 0.5},
        margin={"b": 110},
    )
    return fig


def seed_table(rows: list[dict]) -> str:
    """Each model's Fréchet distance at each seed, and its ratios to the teacher's and the sketch's at the same seed."""
    seeds = rows[0]["seeds"]
    cols = [
        "model",
        *[f"FD seed {s}" for s in seeds],
        "FD mean",
        *[f"vs teacher, seed {s}" for s in seeds],
        "vs teacher, mean of ratios",
        *[f"vs sketch, seed {s}" for s in seeds],
    ]
    table = [
        {
            "model": r["model"],
            **{f"FD seed {s}": v for s, v in zip(seeds, r["fd_by_seed"])},
            "FD mean": r["frechet_distance"],
            **{f"vs teacher, seed {s}": v for s, v in zip(seeds, r["fd_vs_teacher_by_seed"])},
            "vs teacher, mean of ratios": float(np.mean(r["fd_vs_teacher_by_seed"])),
            **{f"vs sketch, seed {s}": v for s, v in zip(seeds, r.get("fd_vs_sketch_by_seed", []))},
        }
        for r in rows
    ]
    return markdown_table(table, cols)


def display_row(row: dict) -> dict:
    """A row as the table prints it: each ratio with its bootstrap interval in one cell."""
    return {**row, **{k: with_interval(row.get(k), row.get(f"{k}_lo"), row.get(f"{k}_hi")) for k in INTERVAL_COLUMNS}}


def markdown(rows: list[dict], settings: dict) -> str:
    seeds = settings["seeds"]
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"every number the mean over seeds {', '.join(map(str, seeds))}"
    text = (
        markdown_table([display_row(r) for r in rows], COLUMNS) + "\n\n"
        f"W = {settings['guidance']:g}, n = {settings['n']} samples per row (classes cycled), {seed_text}"
        f"{bf16_text(settings['bf16'])}. `fd_vs_teacher` / `fd_vs_sketch`: Fréchet distance (classifier features, "
        f"not FID) over the teacher's / the sketch's, the mean of the per-seed ratios with a {settings.get('bootstrap', BOOTSTRAP)}-replicate "
        f"paired bootstrap 95% interval [low, high] (`analysis.protocol`); precision/recall against an equal number of real "
        f"images; `min_class_recall`: the worst class's recall; `hf_share`: share of spectral energy above "
        f"{HF_CUTOFF} cycles/pixel, `hf_gap` its distance from the teacher's.\n"
    )
    if len(seeds) > 1:
        text += "\nFréchet distance at each seed (the same noise for every model at a seed):\n\n" + seed_table(rows) + "\n"
    return text


def named_sketch(refined: list[Path]) -> Path:
    """The one-step sketch the refined students start from: the 1-step student their cards name as
    `training.generator_init` (DMD-only's, the teacher, is not one), found beside them."""
    found = set()
    for folder in refined:
        name = generator_init(read_card(folder))
        sketch = folder.parent / name if name else None
        if sketch is not None and is_model_folder(sketch):
            card = read_card(sketch)
            if card.get("kind") == "student" and card.get("steps") == 1:
                found.add(sketch)
    if len(found) != 1:
        raise ValueError(
            "give the one-step sketch with --sketch: the refined students' cards name "
            + (f"{len(found)} different ones ({', '.join(sorted(f.name for f in found))})" if found else "none beside them")
        )
    return found.pop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.hd_report", description=__doc__.splitlines()[0])
    add_teacher_arg(p)
    p.add_argument("--teacher-steps", type=int, default=64)
    p.add_argument(
        "--sketch",
        default=None,
        help="the one-step sketch (trajectory distillation only); default: the one the refined students' cards name "
        "as their generator's initialisation (a folder beside them)",
    )
    p.add_argument("--students", default="", help="comma-separated refined students (DMD-only, HD with GAP, HD with AWD)")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--n", type=int, default=2000, help="samples per model and seed")
    p.add_argument(
        "--seeds",
        "--seed",
        default="0,1",
        help="comma-separated seeds, the same for every model; the table gives means over them",
    )
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help="bootstrap replicates for the intervals")
    p.add_argument("--batch-size", type=int, default=250)
    add_bf16_argument(p)
    p.add_argument("--no-png", action="store_true", help="skip the PNG (the HTML figure is always written)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    try:
        if args.n < 10 or args.teacher_steps < 1 or args.guidance < 0 or args.bootstrap < 10:
            raise ValueError(
                f"--n must be at least 10, --teacher-steps positive and --guidance non-negative, got {args.n}, {args.teacher_steps}, {args.guidance} "
                f"(and --bootstrap at least 10, got {args.bootstrap})"
            )
        seeds = parse_seeds(args.seeds)
        refined = [Path(s) for s in args.students.split(",") if s]
        students = [Path(args.sketch) if args.sketch else named_sketch(refined)] + refined
        args.teacher = str(args.teacher or named_teacher(students))
        folders = [Path(args.teacher)] + students
        for folder in folders:
            check_model_folder(folder)
        classifier, reference = load_classifier(), load_reference()
        common = {"n": args.n, "batch_size": args.batch_size, "bf16": args.bf16, "guidance": args.guidance}
        rows, sets, class_names = [], [], None
        log = lambda text: print(text, file=sys.stderr, flush=True)
        for i, folder in enumerate(folders):
            model = load_model_folder(folder)
            class_names = class_names or model.card.class_names
            steps = args.teacher_steps if i == 0 else (model.card.steps or 1)
            model_sets = [
                sample_features(
                    folder,
                    model,
                    args.n,
                    steps,
                    args.guidance,
                    "ddim",
                    seed,
                    args.batch_size,
                    bf16_for(args.bf16, teacher=i == 0),
                    classifier=classifier,
                    log=log,
                )
                for seed in seeds
            ]
            seed_rows = [model_row(model, steps, fs, reference, seed) for fs, seed in zip(model_sets, seeds)]
            rows.append({**mean_over_seeds(seed_rows, seeds), "model": model.name, "method": model.card.method})
            sets.append(model_sets)
    except (ValueError, ModelFolderError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    add_relative(rows, sets, real_pool(reference, classifier), reference, args.bootstrap)
    for r in rows:
        print(json.dumps({k: r.get(k) for k in COLUMNS}), flush=True)
    out = Path(args.out)
    settings = {**common, "seeds": seeds, "bootstrap": args.bootstrap}
    meta = report_meta(settings=settings)
    written = write_report(
        out,
        "hd",
        {"meta": meta, "rows": rows},
        markdown(rows, settings),
        spectrum_figure(rows, class_names),
        "hd-spectrum",
        1300,
        440,
        png=not args.no_png,
    )
    maps = discriminator_maps(students)
    if maps:  # where each refined student's final discriminator looked (recorded at export)
        fig = plot_token_maps(maps, class_names)
        written.append(write_html(fig, out / "hd-token-maps.html"))
        if not args.no_png and (png := write_png(fig, out / "hd-token-maps.png", 1300)) is not None:
            written.append(png)
    print(json.dumps({"written": [str(w) for w in written]}))
    return 0


def discriminator_maps(folders: list[Path]) -> dict[str, dict]:
    """The discriminator maps of the folders that have them, by model name with their mean token entropy."""
    from demo.distill.hd import read_discriminator_maps

    maps = {}
    for folder in folders:
        if (m := read_discriminator_maps(folder)) is not None:
            maps[f"{Path(folder).name} (entropy {m['entropy']:.2f})"] = m
    return maps


if __name__ == "__main__":
    raise SystemExit(main())
