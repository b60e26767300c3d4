"""`python -m analysis.teacher_report --model assets/models/fmnist-teacher [--n 2000] [--seeds 0,1] [--guidances 0,1,2,3] [--guidance-interval LO,HI]`

Evaluates a teacher at 64 DDIM steps for several guidance scales (and, with `--guidance-interval`, each W > 1 again
with guidance only inside the interval, beside the plain row: `fd_vs_plain` is its Fréchet distance over the plain
row's, the mean of per-seed ratios with a paired bootstrap interval, `analysis.protocol`), every number the mean over
`--seeds`, writes `assets/results/<name>.json` and `.md` (a markdown table with the
real-train-vs-test floor and, once `analysis.floors` has run, the guided real-data floor at each W), per-class
sample grid PNGs, and stores the measured metrics in the model's card.json. Each (settings, seed, n) is sampled once:
its features are cached (`analysis.protocol.FEATURES_DIR`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from analysis.classifier import CLASSIFIER_DIR, load_classifier
from analysis.evaluate import evaluate_seeds
from analysis.metrics import load_reference
from analysis.protocol import BOOTSTRAP, compare, parse_seeds, ratio_columns, real_pool, report_meta, with_interval
from demo.core.card import read_card, write_card
from demo.core.data import to_uint8
from demo.core.generate import generate
from demo.core.guidance import parse_interval
from demo.core.images import image_grid
from demo.core.models import load_model_folder
from demo.core.paths import RESULTS_DIR

RESULTS = RESULTS_DIR
COLUMNS = (
    "guidance",
    "interval",
    "steps",
    "n",
    "accuracy",
    "frechet_distance",
    "kid",
    "precision",
    "recall",
    "diversity_ratio",
    "nfe",
    "seconds",
    "fd_vs_plain",
)
FLOOR_COLUMNS = COLUMNS[3:10]  # n … diversity_ratio


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _reference_row(label: str, values: dict) -> str:
    return (
        f"| {label} | – | – | "
        + " | ".join(_fmt(values.get(c, "–")) for c in FLOOR_COLUMNS)
        + " | –" * len(COLUMNS[10:])
        + " |\n"
    )


def markdown_table(rows: list[dict], floor: dict, guided_floors: list[dict] = ()) -> str:
    """Model rows, the real-train floor, and (when measured, `analysis.floors`) the guided real-data floor per W."""
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    cell = lambda r, c: (
        with_interval(r[c], r.get(f"{c}_lo"), r.get(f"{c}_hi")) if c == "fd_vs_plain" and c in r else _fmt(r.get(c, "–"))
    )
    body = "".join("| " + " | ".join(cell(r, c) for c in COLUMNS) + " |\n" for r in rows)
    guided = "".join(
        _reference_row(f"real train, p(c\\|x)^(W−1)-resampled: guided floor at W = {f['guidance']:g}", f) for f in guided_floors
    )
    return head + body + _reference_row("real train images (floor)", floor) + guided


def load_guided_floors(path: Path, guidances) -> list[dict]:
    """The `analysis.floors` rows for the report's guidance scales above 1 (none if it has not been run)."""
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())["rows"]
    return [r for r in rows if r["guidance"] in {float(g) for g in guidances} and r["guidance"] > 1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.teacher_report")
    p.add_argument("--model", default="assets/models/fmnist-teacher")
    p.add_argument("--n", type=int, default=2000, help="samples at W = 2")
    p.add_argument("--n-other", type=int, default=1000, help="samples at the other guidance scales")
    p.add_argument("--seeds", "--seed", default="0,1", help="comma-separated seeds; numbers are means over them")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help="bootstrap replicates for the intervals")
    p.add_argument("--guidances", default="0,1,2,3")
    p.add_argument(
        "--guidance-interval", default=None, metavar="LO,HI", help="also evaluate each W > 1 with this guidance interval"
    )
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument(
        "--cache", default=None, help="cached per-seed feature sets (default: analysis.protocol.FEATURES_DIR, runs/eval-features)"
    )
    args = p.parse_args(argv)
    try:
        model = load_model_folder(args.model)
        interval = parse_interval(args.guidance_interval, model.schedule.num_train_timesteps)
        guidances = [float(g) for g in args.guidances.split(",")]
        seeds = parse_seeds(args.seeds)
        if args.bootstrap < 10:
            raise ValueError(f"--bootstrap must be at least 10, got {args.bootstrap}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    classifier, reference = load_classifier(), load_reference()
    floor = json.loads((CLASSIFIER_DIR / "info.json").read_text())["floor"]
    plan = [(W, None) for W in guidances] + [(W, interval) for W in guidances if interval is not None and W > 1]
    rows, plain_sets = [], {}
    log = lambda text: print(text, file=sys.stderr, flush=True)
    for W, iv in plan:
        n = args.n if W == 2.0 else args.n_other
        r, sets = evaluate_seeds(
            args.model,
            model,
            seeds,
            n,
            args.steps,
            W,
            "ddim",
            "all",
            250,
            classifier,
            reference,
            bf16=args.bf16,
            interval=iv,
            cache_dir=args.cache,
            log=log,
        )
        r = {**r, "interval": f"{iv[0]}–{iv[1]}" if iv else "–"}
        if iv is None:
            plain_sets[W] = sets
        else:  # the interval row beside the plain one: how much the interval changes the distance, same seeds and noise
            c = compare(sets, plain_sets[W], seeds, real_pool(reference, classifier), reference, args.bootstrap)
            r.update(ratio_columns(c, "plain", accuracy=False))
        rows.append(r)
        print(json.dumps({k: r.get(k) for k in COLUMNS}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = report_meta(
        machine=platform.processor() or platform.machine(),
        bf16=args.bf16,
        sampler="ddim",
        floor=floor,
        seeds=seeds,
        bootstrap=args.bootstrap,
    )
    guided_floors = load_guided_floors(out / "floors.json", guidances)
    (out / f"{model.name}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "guided_floors": guided_floors}, indent=2) + "\n"
    )
    (out / f"{model.name}.md").write_text(markdown_table(rows, floor, guided_floors))
    # Per-class grids: 10 classes × 8 seeds at W = 2 (and with the interval, when given).
    labels = torch.arange(10).repeat_interleave(8)
    for suffix, iv in (("", None), ("-interval", interval)) if interval else (("", None),):
        gen = generate(model, len(labels), "all", args.steps, 2.0, "ddim", seed=1, labels=labels, bf16=args.bf16, interval=iv)
        grid = image_grid(to_uint8(gen.images), ncols=8)
        grid.resize((grid.width * 3, grid.height * 3), 0).save(out / f"{model.name}-classes{suffix}.png")  # 0: nearest
    card = read_card(args.model, strict=True)
    tag = lambda r: (
        f"ddim{args.steps}_W{r['guidance']:g}" + (f"_gi{r['interval'].replace('–', '-')}" if r["interval"] != "–" else "")
    )
    card["metrics"] = {
        **card.get("metrics", {}),
        **{
            tag(r): {
                k: r[k]
                for k in (*COLUMNS, "fd_vs_plain_lo", "fd_vs_plain_hi")
                if k in r and k not in ("guidance", "steps", "interval")
            }
            for r in rows
        },
    }
    write_card(args.model, card)
    print(json.dumps({"written": [str(out / f"{model.name}.json"), str(out / f"{model.name}.md")]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
