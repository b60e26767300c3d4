"""`python -m analysis.guided_report --students DIR[,DIR…] [--steps 1,2,4,8,16] [--guidances 1,2,3,5] [--n 2000] [--seeds 0,1]`

Guided distillation's results (Meng et al. 2023): the teacher's own CFG DDIM at every step count in `--steps`
(2 NFE per step), the stage-1 w-conditioned student at every step count (1 NFE per step), each progressive student
at its distilled step count, and the single-W ablation, all at every W in `--guidances` — Fréchet distance in the
Fashion-MNIST classifier's features (not FID), accuracy, precision, recall, NFE and seconds. The teacher samples with
DDIM; `--student-samplers ddim,stochastic` adds rows of the students under Meng's stochastic sampler (two or more steps).

Judged under `analysis.protocol`: every model at the same `--seeds` (the same noise and labels), every number the
mean over the seeds, and `fd_vs_reference` — a row's Fréchet distance over the teacher's at `--reference-steps` and
the same W, plain CFG against plain CFG — the mean of the per-seed ratios with a paired bootstrap interval, beside the
accuracy difference to that teacher row with its interval. `--teacher-interval LO,HI` adds the teacher's
guidance-interval rows beside the plain ones (their ratio is against the plain teacher too). `--teacher-steps`
chooses the teacher's own step counts apart from the students' (`none`: its reference rows only).

Writes `OUT/guided.json`, `OUT/guided.md` (one table per W) and the quality-versus-NFE figure `OUT/guided-nfe.html`
and `.png`. Each (model weights, steps, W, settings, seed, n) is sampled once: its features are cached
(`analysis.protocol.FEATURES_DIR`), so re-running, adding a seed or a model, or re-bootstrapping never re-samples.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analysis.classifier import load_classifier
from analysis.evaluate import add_teacher_arg, evaluate_seeds, markdown_table, store_card_metrics
from analysis.figure_png import write_report
from analysis.metrics import load_reference
from analysis.protocol import (
    BOOTSTRAP,
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
from demo.core.guidance import parse_interval
from demo.core.models import ModelFolderError, check_model_folder, load_model_folder
from demo.core.paths import RESULTS_DIR

RESULTS = RESULTS_DIR
COLUMNS = (
    "model",
    "method",
    "sampler",
    "interval",
    "steps",
    "guidance",
    "nfe",
    "frechet_distance",
    "fd_vs_reference",
    "accuracy",
    "accuracy_diff",
    "precision",
    "recall",
    "diversity",
)
INTERVAL_COLUMNS = ("fd_vs_reference", "accuracy_diff")  # printed as "value [low, high]"


def plan(
    model, steps: list[int], guidances: list[float], reference: tuple[int, list[float]] | None = None
) -> list[tuple[int, float]]:
    """(steps, W) pairs to evaluate: a distilled student at its own step count, any other model at every count;
    a single-W student (its card's guidance range is one value) only at that W, the one guidance it was trained for;
    the teacher also at the reference step count (e.g. 64) for the W values in `reference`."""
    counts = [model.card.steps] if model.card.kind == "student" and model.card.steps else steps
    g = model.card.guidance
    if model.card.kind == "student" and g.get("min") is not None and g.get("min") == g.get("max"):
        guidances = [w for w in guidances if w == g["min"]]
    pairs = [(s, w) for s in counts for w in guidances]
    if reference and model.card.kind != "student" and reference[0] not in counts:
        pairs += [(reference[0], w) for w in reference[1]]
    return pairs


def parse_teacher_steps(text: str) -> list[int]:
    """`--teacher-steps`: positive step counts, or 'none' for the teacher's reference rows only (e.g. to measure a
    student against the 64-step teacher without sampling the teacher at the student's step counts)."""
    if text.strip().lower() == "none":
        return []
    try:
        counts = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ValueError(f"--teacher-steps needs positive integers or 'none', got {text!r}")
    return counts


def is_reference(row: dict, teacher_name: str, reference_steps: int) -> bool:
    return (
        row["model"] == teacher_name
        and row["steps"] == reference_steps
        and row.get("sampler", "ddim") == "ddim"
        and not row.get("guidance_interval")
    )


def add_reference_ratios(
    rows: list[dict],
    teacher_name: str,
    reference_steps: int,
    sets: list | None = None,
    pool=None,
    reference=None,
    replicates: int = BOOTSTRAP,
) -> None:
    """`fd_vs_reference`: a row's Fréchet distance over the plain-CFG teacher's at `reference_steps` and the same W.

    With the rows' per-seed feature sets (`sets[i]` for `rows[i]`), it is the mean over seeds of the per-seed ratio
    with a paired bootstrap interval (`analysis.protocol.compare`), and `accuracy_diff` the accuracy difference to
    that teacher row with its interval; without them, the ratio of the means.
    """
    ref = {r["guidance"]: i for i, r in enumerate(rows) if is_reference(r, teacher_name, reference_steps)}
    for i, r in enumerate(rows):
        j = ref.get(r["guidance"])
        if j is None:
            continue
        if sets is None:
            r["fd_vs_reference"] = r["frechet_distance"] / rows[j]["frechet_distance"]
            continue
        c = compare(sets[i], sets[j], r["seeds"], pool, reference, replicates)
        r.update(ratio_columns(c, "reference"))


def display_row(row: dict) -> dict:
    """A row as the table prints it: each ratio with its interval in one cell, the guidance interval as LO–HI."""
    out = {**row, **{k: with_interval(row.get(k), row.get(f"{k}_lo"), row.get(f"{k}_hi")) for k in INTERVAL_COLUMNS}}
    out["interval"] = "{}–{}".format(*row["guidance_interval"]) if row.get("guidance_interval") else "–"
    return out


def series_name(row: dict) -> str:
    """Progressive students form one series over their step counts; every other model is its own series (per sampler)."""
    name = "progressive students" if row["method"] == "progressive" else row["model"]
    return name if row.get("sampler", "ddim") == "ddim" else f"{name} ({row['sampler']})"


def quality_vs_nfe_figure(rows: list[dict], guidances: list[float]):
    """Fréchet distance against NFE (log), one panel per W, one line per series."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from analysis.plots import _layout, _palette

    names = list(dict.fromkeys(series_name(r) for r in rows))
    colours = dict(zip(names, _palette(len(names))))
    fig = make_subplots(rows=1, cols=len(guidances), subplot_titles=[f"W = {w:g}" for w in guidances], shared_yaxes=True)
    for col, w in enumerate(guidances, start=1):
        for name in names:
            pts = sorted(
                (r["nfe"], r["frechet_distance"], r["steps"]) for r in rows if series_name(r) == name and r["guidance"] == w
            )
            if not pts:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in pts],
                    y=[p[1] for p in pts],
                    text=[f"{p[2]} steps" for p in pts],
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    line={"color": colours[name]},
                    hovertemplate=f"{name}<br>%{{text}}, NFE %{{x}}<br>Fréchet distance %{{y:.3g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title="NFE", type="log", row=1, col=col)
    fig.update_yaxes(title="Fréchet distance (classifier features; lower is better)", row=1, col=1)
    fig = _layout(fig, "Guided distillation: quality against network evaluations", height=420)
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "center", "x": 0.5}, margin={"b": 90})
    return fig


def markdown(rows: list[dict], guidances: list[float], settings: dict, reference_steps: int = 0) -> str:
    cols = [c for c in COLUMNS if c != "guidance"]
    text = ""
    for w in guidances:
        sel = sorted((r for r in rows if r["guidance"] == w), key=lambda r: (r["nfe"], r["model"]))
        text += f"\n**W = {w:g}**\n\n" + markdown_table([display_row(r) for r in sel], cols) + "\n"
    seeds = settings["seeds"]
    seed_text = (
        f"seed {seeds[0]}"
        if len(seeds) == 1
        else f"every number the mean over seeds {', '.join(map(str, seeds))} (the same noise for every model)"
    )
    text += (
        f"\nn = {settings['n']} samples per row and seed (classes cycled), {seed_text}"
        f"{bf16_text(settings['bf16'])}; the teacher uses CFG (2 NFE per step), w-conditioned students 1. "
        "Precision/recall against an equal number of real images.\n"
    )
    if reference_steps:
        text += (
            f"`fd_vs_reference`: Fréchet distance over the plain-CFG teacher's at {reference_steps} steps ({2 * reference_steps} NFE) and "
            f"the same W, the mean of the per-seed ratios, and `accuracy_diff` the accuracy minus that teacher's, each with a "
            f"{settings.get('bootstrap', BOOTSTRAP)}-replicate paired bootstrap 95% interval [low, high] (`analysis.protocol`).\n"
        )
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.guided_report", description=__doc__.splitlines()[0])
    add_teacher_arg(p)
    p.add_argument("--students", default="", help="comma-separated student model folders (stage 1, progressive, single-W)")
    p.add_argument("--steps", default="1,2,4,8,16")
    p.add_argument("--guidances", default="1,2,3,5")
    p.add_argument(
        "--teacher-steps",
        default=None,
        help="the teacher's own DDIM rows at these step counts (default: --steps; 'none': only its reference rows)",
    )
    p.add_argument("--reference-steps", type=int, default=64, help="the teacher's reference step count (0: none)")
    p.add_argument("--reference-guidances", default="2", help="W values at which the teacher's reference is evaluated")
    p.add_argument(
        "--student-samplers", default="ddim", help="comma-separated: ddim and/or stochastic (the teacher always uses ddim)"
    )
    p.add_argument(
        "--teacher-interval", default=None, metavar="LO,HI", help="also the teacher's reference rows with this guidance interval"
    )
    p.add_argument("--n", type=int, default=2000, help="samples per model, setting and seed")
    p.add_argument(
        "--seeds", "--seed", default="0,1", help="comma-separated seeds, the same for every model; numbers are means over them"
    )
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help="bootstrap replicates for the intervals")
    p.add_argument("--batch-size", type=int, default=250)
    add_bf16_argument(p)
    p.add_argument("--no-png", action="store_true", help="skip the PNG (the HTML figure is always written)")
    p.add_argument("--no-cards", action="store_true", help="do not store the students' rows in their card.json")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument(
        "--cache", default=None, help="cached per-seed feature sets (default: analysis.protocol.FEATURES_DIR, runs/eval-features)"
    )
    args = p.parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",") if s]
        guidances = [float(w) for w in args.guidances.split(",") if w]
        if not steps or min(steps) < 1 or not guidances or min(guidances) < 0:
            raise ValueError(
                f"--steps needs positive integers and --guidances non-negative numbers, got {args.steps!r} and {args.guidances!r}"
            )
        teacher_steps = steps if args.teacher_steps is None else parse_teacher_steps(args.teacher_steps)
        ref_ws = [float(w) for w in args.reference_guidances.split(",") if w]
        if args.reference_steps < 0 or not set(ref_ws) <= set(guidances):
            raise ValueError(
                f"--reference-steps must be 0 or more and --reference-guidances a subset of --guidances, got {args.reference_steps!r} and {args.reference_guidances!r}"
            )
        teacher_reference = (args.reference_steps, ref_ws) if args.reference_steps else None
        seeds = parse_seeds(args.seeds)
        if args.n < 2 or args.bootstrap < 10:
            raise ValueError(f"--n must be at least 2 and --bootstrap at least 10, got {args.n} and {args.bootstrap}")
        students = [Path(s) for s in args.students.split(",") if s]
        args.teacher = str(args.teacher or named_teacher(students))
        folders = [Path(args.teacher)] + students
        for folder in folders:  # every folder is checked before any model is evaluated
            check_model_folder(folder)
        classifier, reference = load_classifier(), load_reference()
        cache = Path(args.cache) if args.cache else None
        student_samplers = [x for x in args.student_samplers.split(",") if x]
        if not student_samplers or not set(student_samplers) <= {"ddim", "stochastic"}:
            raise ValueError(f"--student-samplers takes ddim and/or stochastic, got {args.student_samplers!r}")
        settings = {
            "n": args.n,
            "seeds": seeds,
            "seed": seeds[0],
            "batch_size": args.batch_size,
            "bf16": args.bf16,
            "bootstrap": args.bootstrap,
        }
        rows, sets = [], []
        log = lambda text: print(text, file=sys.stderr, flush=True)
        for i, folder in enumerate(folders):
            model = load_model_folder(folder)
            samplers = student_samplers if model.card.kind == "student" else ["ddim"]
            counts = teacher_steps if i == 0 else steps
            todo = [(sw, x, None) for x in samplers for sw in plan(model, counts, guidances, teacher_reference)]
            if (
                i == 0 and args.teacher_interval and teacher_reference
            ):  # the teacher's guidance-interval rows beside the plain ones
                iv = parse_interval(args.teacher_interval, model.schedule.num_train_timesteps)
                todo += [((teacher_reference[0], w), "ddim", iv) for w in teacher_reference[1] if w > 1]
            for (s, w), sampler, iv in todo:
                if sampler == "stochastic" and s < 2:
                    continue  # the stochastic sampler takes two half-steps per step: not defined for one step
                row, row_sets = evaluate_seeds(
                    folder,
                    model,
                    seeds,
                    args.n,
                    s,
                    w,
                    sampler,
                    "all",
                    args.batch_size,
                    classifier,
                    reference,
                    bf16=bf16_for(args.bf16, teacher=i == 0),
                    interval=iv,
                    cache_dir=cache,
                    log=log,
                )
                row = {**row, "model": model.name, "method": model.card.method, "folder": str(folder), "kind": model.card.kind}
                rows.append(row)
                sets.append(row_sets)
                print(json.dumps({k: row.get(k) for k in COLUMNS if k in row}), flush=True)
    except (ValueError, ModelFolderError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.reference_steps:
        add_reference_ratios(
            rows, rows[0]["model"], args.reference_steps, sets, real_pool(reference, classifier), reference, args.bootstrap
        )
    for r in [] if args.no_cards else rows:
        if r["kind"] == "student":
            metrics = {
                k: r[k]
                for k in (
                    "frechet_distance",
                    "fd_vs_reference",
                    "fd_vs_reference_lo",
                    "fd_vs_reference_hi",
                    "accuracy",
                    "accuracy_diff",
                    "precision",
                    "recall",
                    "diversity",
                    "nfe",
                    "seeds",
                    "n",
                    "protocol",
                )
                if k in r
            }
            store_card_metrics(r["folder"], f"{r['sampler']}{r['steps']}_W{r['guidance']:g}_guided_report", metrics)
    out = Path(args.out)
    meta = report_meta(settings={**settings, "student_samplers": student_samplers}, reference_steps=args.reference_steps)
    written = write_report(
        out,
        "guided",
        {"meta": meta, "rows": rows},
        markdown(rows, guidances, settings, args.reference_steps),
        quality_vs_nfe_figure(rows, guidances),
        "guided-nfe",
        1300,
        420,
        png=not args.no_png,
    )
    print(json.dumps({"written": [str(w) for w in written]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
