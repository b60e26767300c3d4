"""`python -m analysis.teacher_report --model assets/models/fmnist-teacher [--n 2000] [--guidances 0,1,2,3]`

Evaluates a teacher at 64 DDIM steps for several guidance scales, writes `assets/results/<name>.json` and `.md`
(a markdown table with the real-train-vs-test floor), a per-class sample grid PNG, and stores the measured
metrics in the model's card.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from analysis.classifier import CLASSIFIER_DIR, load_classifier
from analysis.evaluate import evaluate_model
from analysis.metrics import load_reference
from demo.data import to_uint8
from demo.generate import generate
from demo.models import load_model_folder
from demo.sample import image_grid

RESULTS = Path(__file__).resolve().parent.parent / "assets" / "results"
COLUMNS = ("guidance", "steps", "n", "accuracy", "frechet_distance", "kid", "precision", "recall", "diversity_ratio", "nfe", "seconds")


def markdown_table(rows: list[dict], floor: dict) -> str:
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    body = "".join("| " + " | ".join(fmt(r.get(c, "")) for c in COLUMNS) + " |\n" for r in rows)
    floor_row = "| real train images (floor) | – | " + " | ".join(fmt(floor.get(c, "–")) for c in COLUMNS[2:9]) + " | – | – |\n"
    return head + body + floor_row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.teacher_report")
    p.add_argument("--model", default="assets/models/fmnist-teacher")
    p.add_argument("--n", type=int, default=2000, help="samples at W = 2")
    p.add_argument("--n-other", type=int, default=1000, help="samples at the other guidance scales")
    p.add_argument("--guidances", default="0,1,2,3")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    model = load_model_folder(args.model)
    classifier, reference = load_classifier(), load_reference()
    floor = json.loads((CLASSIFIER_DIR / "info.json").read_text())["floor"]
    rows = []
    for W in (float(g) for g in args.guidances.split(",")):
        n = args.n if W == 2.0 else args.n_other
        r = evaluate_model(model, n, args.steps, W, "ddim", 0, "all", 250, classifier, reference, bf16=args.bf16)
        rows.append(r)
        print(json.dumps({k: r[k] for k in COLUMNS}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "bf16": args.bf16, "sampler": "ddim", "floor": floor}  # fmt: skip
    (out / f"{model.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / f"{model.name}.md").write_text(markdown_table(rows, floor))
    # Per-class grid: 10 classes × 8 seeds at W = 2.
    labels = torch.arange(10).repeat_interleave(8)
    gen = generate(model, len(labels), "all", args.steps, 2.0, "ddim", seed=1, labels=labels, bf16=args.bf16)
    grid = image_grid(to_uint8(gen.images), ncols=8)
    grid.resize((grid.width * 3, grid.height * 3), 0).save(out / f"{model.name}-classes.png")  # 0: nearest
    card_path = Path(args.model) / "card.json"
    card = json.loads(card_path.read_text())
    card["metrics"] = {f"ddim{args.steps}_W{r['guidance']:g}": {k: r[k] for k in COLUMNS if k not in ("guidance", "steps")} for r in rows}
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps({"written": [str(out / f"{model.name}.json"), str(out / f"{model.name}.md")]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
