"""`python -m analysis.text_report --teacher DIR [--student DIR] [--seeds 0,1] [--out assets/results/text]`

What the embedded text-conditional teacher learned (issue 26), on the caption grammar of `demo.core.captions`:

1. **Class words.** For each class, the prompt "a {class}" (e.g. "a sandal") at W = `--guidance`, `--steps` DDIM
   steps, `--n-class` images per class and seed: the Fashion-MNIST classifier's accuracy, per class and overall, mean
   over the seeds.
2. **Attribute words.** For each class and each attribute word (dark/light, narrow/wide, plain/patterned), the prompt
   "a {word} {class}" against the plain "a {class}" from the same noise (`--n-attr` images, the same seed for every
   prompt): the measured attribute's mean (`demo.core.captions.measure_attributes`), its change, and whether it
   moved in the asked direction (down for dark/narrow/plain, up for light/wide/patterned), at W = 1 and W = 2.
3. **The student** (`--student`, e.g. the guided 4-step student): its Fréchet distance in the classifier's feature
   space (not FID) over the ten class prompts against the teacher's at `--teacher-steps`, n = `--fd-n` per seed, the
   same seeds and noise, mean of the per-seed ratios with a paired bootstrap interval (`analysis.protocol`); the
   teacher's own few-step DDIM beside it.

Writes `OUT/text.json` and `OUT/text.md`. Feature sets are cached per seed (`analysis.protocol.FEATURES_DIR`), the
attribute table per class and W (`OUT/attribute-rows/`), so a report stopped half-way resumes. With `--steps` equal to
`--teacher-steps` and `--n-class` × 10 = `--fd-n`, the class-word accuracy reads the teacher's Fréchet-distance sets
(the same prompts, noise and settings) instead of sampling its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from analysis.protocol import (
    compare,
    feature_metrics,
    mean_metrics,
    parse_seeds,
    real_pool,
    report_meta,
    sample_features,
    with_interval,
)
from demo.core.captions import ATTRIBUTES, CLASS_PROMPTS, CLASS_WORDS, WORDS, caption, measure_attributes
from demo.core.cli import MAX_SAMPLES
from demo.core.guidance import GUIDANCE_MAX, GUIDANCE_MIN
from demo.core.paths import RESULTS_DIR
from demo.core.validate import MAX_TIMESTEPS, arg_float, arg_int, whole


def class_accuracy(folder, model, n_per_class: int, steps: int, guidance: float, seeds, classifier, log=None) -> dict:
    """Per-class accuracy of the class prompts (prompt k is class k), mean over seeds."""
    per_seed, hits, counts = [], np.zeros(len(CLASS_PROMPTS)), np.zeros(len(CLASS_PROMPTS))
    for seed in seeds:
        fs = sample_features(
            folder, model, n_per_class * len(CLASS_PROMPTS), steps, guidance, "ddim", seed, classifier=classifier,
            prompt=CLASS_PROMPTS, log=log,
        )  # fmt: skip
        correct = (fs.probs.argmax(1) == fs.labels).double()
        per_seed.append([float(correct[fs.labels == k].mean()) for k in range(len(CLASS_PROMPTS))])
        hits += [float(correct[fs.labels == k].sum()) for k in range(len(CLASS_PROMPTS))]
        counts += [float((fs.labels == k).sum()) for k in range(len(CLASS_PROMPTS))]
    per_class = np.mean(per_seed, axis=0)
    return {
        "per_class": {CLASS_WORDS[k]: round(float(a), 4) for k, a in enumerate(per_class)},
        "per_class_interval": {CLASS_WORDS[k]: wilson(hits[k], counts[k]) for k in range(len(CLASS_PROMPTS))},
        "mean": float(per_class.mean()),
        "min": float(per_class.min()),
        "by_seed": [float(np.mean(s)) for s in per_seed],
    }


def wilson(hits: float, n: float, z: float = 1.96) -> list[float]:
    """The Wilson score 95% interval of a proportion `hits / n` (images pooled over the seeds), which stays inside
    [0, 1] and does not collapse at an accuracy of 1, where the normal interval would."""
    if n <= 0:
        return [0.0, 1.0]
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(float(centre - half), 4), round(float(centre + half), 4)]


def attribute_rows(model, n: int, steps: int, guidances, seed: int, folder=None, cache_dir=None, log=None) -> list[dict]:
    """One row per (class, attribute word, W): the attribute's mean with and without the word, from the same noise.

    With `folder` and `cache_dir`, each (W, class) block of rows is kept in `cache_dir` (keyed by the weights and the
    settings, `analysis.evaluate.cached_row`), so a report stopped half-way resumes where it stopped."""
    from analysis.evaluate import cached_row, weights_key

    weights = weights_key(folder) if folder is not None and cache_dir is not None else None
    rows = []
    for W in guidances:
        for k in range(len(CLASS_WORDS)):
            block = partial(_attribute_block, model, n, steps, float(W), k, seed)
            if weights is None:
                rows += block()["rows"]
                continue
            key = {"weights": weights, "n": n, "steps": steps, "guidance": float(W), "class": k, "seed": seed}
            row, computed = cached_row(cache_dir, f"{model.name}-W{W:g}-{k}", key, block)
            if computed and log:
                log(f"attributes: {CLASS_WORDS[k]} at W = {W:g} measured")
            rows += row["rows"]
    return rows


def _attribute_block(model, n: int, steps: int, W: float, k: int, seed: int) -> dict:
    """{"rows": the rows of one class at one W}: its plain prompt and each attribute word, all from the same noise."""
    from demo.core.generate import generate

    base = measure_attributes(generate(model, n, "all", steps, W, "ddim", seed, prompt=[caption(k)]).images)
    rows = []
    for a, name in enumerate(ATTRIBUTES):
        for side, word in enumerate(WORDS[a]):
            codes = [0, 0, 0]
            codes[a] = side + 1
            prompt = caption(k, codes)
            vals = measure_attributes(generate(model, n, "all", steps, W, "ddim", seed, prompt=[prompt]).images)
            lo, delta, hi = paired_change(base[:, a], vals[:, a])
            asked = -1.0 if side == 0 else 1.0
            rows.append(
                {
                    "class": CLASS_WORDS[k],
                    "attribute": name,
                    "word": word,
                    "prompt": prompt,
                    "guidance": W,
                    "plain_mean": round(float(base[:, a].mean()), 4),
                    "word_mean": round(float(vals[:, a].mean()), 4),
                    "change": round(delta, 4),
                    "change_lo": None if lo is None else round(lo, 4),
                    "change_hi": None if hi is None else round(hi, 4),
                    "moved": bool(asked * delta > 0),
                    "moved_clearly": bool(lo is not None and min(asked * lo, asked * hi) > 0),
                }
            )
    return {"rows": rows}


def paired_change(before, after) -> tuple[float | None, float, float | None]:
    """(lo, mean, hi): the mean per-image change `after - before` of images sampled from the same noise, with a 95%
    normal interval of ±1.96 standard errors of the paired differences (lo = hi = None for a single image). At the
    report's n = 50 the t quantile would be 2.01, so this interval is ~2% narrower than Student's."""
    d = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    mean = float(d.mean())
    if len(d) < 2:
        return None, mean, None  # one image: no interval
    half = 1.96 * float(d.std(ddof=1)) / np.sqrt(len(d))
    return mean - half, mean, mean + half


def moved_share(rows: list[dict]) -> dict:
    """The share of prompts whose attribute moved as asked, per W and per attribute; `clearly`: the share whose
    paired 95% interval lies wholly on the asked side (rows without an interval count by their sign)."""
    out = {}
    for W in sorted({r["guidance"] for r in rows}):
        sel = [r for r in rows if r["guidance"] == W]
        out[f"W={W:g}"] = {
            "all": float(np.mean([r["moved"] for r in sel])),
            "clearly": float(np.mean([r.get("moved_clearly", r["moved"]) for r in sel])),
            **{
                name: float(np.mean([r["moved"] for r in sel if r["attribute"] == name]))
                for name in ATTRIBUTES
                if any(r["attribute"] == name for r in sel)
            },
        }
    return out


def fd_rows(teacher_dir, teacher, students, seeds, n, teacher_steps, guidance, classifier, reference, log=None) -> list[dict]:
    """Each (folder, model, steps) against the teacher at `teacher_steps`: the ratio of Fréchet distances with an interval."""
    pool = real_pool(reference, classifier)

    def sets(folder, model, steps):
        return [
            sample_features(folder, model, n, steps, guidance, "ddim", s, classifier=classifier, prompt=CLASS_PROMPTS, log=log)
            for s in seeds
        ]

    def metrics(feature_sets) -> dict:
        m = mean_metrics([feature_metrics(fs, reference, seed) for fs, seed in zip(feature_sets, seeds)], list(seeds))
        keys = ("frechet_distance", "fd_by_seed", "precision", "recall", "accuracy", "seconds")
        return {k: m[k] for k in keys} | {"nfe": feature_sets[0].nfe}

    t_sets = sets(teacher_dir, teacher, teacher_steps)
    rows = [{"model": teacher.name, "steps": teacher_steps, **metrics(t_sets)}]
    for label, folder, model, steps in students:
        s_sets = sets(folder, model, steps)
        c = compare(s_sets, t_sets, list(seeds), pool, reference)
        rows.append(
            {
                "model": label,
                "steps": steps,
                **metrics(s_sets),
                "fd_vs_teacher": c["fd_ratio"],
                "fd_vs_teacher_lo": c["fd_ratio_lo"],
                "fd_vs_teacher_hi": c["fd_ratio_hi"],
                "fd_vs_teacher_by_seed": c["fd_ratio_by_seed"],
                "accuracy_diff": c["accuracy_diff"],
            }
        )
    return rows


def markdown(report: dict) -> str:
    lines = [f"# Text-conditional teacher: {report['teacher']}", ""]
    acc = report["class_accuracy"]
    lines += [f"## Class words at W = {report['settings']['guidance']:g} ({report['settings']['steps']} DDIM steps)", ""]
    n = report["settings"]["n_class"]
    lines += [
        f"{n} images per prompt and seed; the interval is Wilson's 95% over the {n * len(report['seeds'])} images pooled.",
        "",
        "| class | prompt | accuracy [95%] |",
        "|---|---|---|",
    ]
    for k, (c, a) in enumerate(acc["per_class"].items()):
        lo, hi = acc.get("per_class_interval", {}).get(c, (None, None))
        lines.append(f"| {c} | {CLASS_PROMPTS[k]} | {a:.3f}{f' [{lo:.3f}, {hi:.3f}]' if lo is not None else ''} |")
    lines += [
        "",
        f"Mean {acc['mean']:.3f}, lowest {acc['min']:.3f}; by seed {', '.join(f'{x:.3f}' for x in acc['by_seed'])}.",
        "",
    ]
    attr_steps = report["settings"].get("attr_steps", report["settings"]["steps"])
    lines += [f"## Attribute words (same noise with and without the word; {attr_steps} DDIM steps)", ""]
    for W, share in report["attribute_moved"].items():
        per = ", ".join(f"{k} {v:.0%}" for k, v in share.items() if k not in ("all", "clearly"))
        clearly = f"; {share['clearly']:.0%} with the paired 95% interval on the asked side" if "clearly" in share else ""
        lines.append(f"- {W}: {share['all']:.0%} of the prompts moved their attribute as asked ({per}){clearly}.")
    lines += [
        "",
        f"{report['settings']['n_attr']} images per prompt, one seed; *change* is the mean per-image change from the same"
        " noise with its 95% interval (±1.96 standard errors of the paired differences).",
        "",
        "| class | word | W | plain | with word | change [95%] | as asked |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['class']} | {r['word']} | {r['guidance']:g} | {r['plain_mean']:.3f} | {r['word_mean']:.3f} | {_change(r)} | {_asked(r)} |"
        for r in report["attributes"]
    ]
    if report.get("fd"):
        lines += ["", "## Fréchet distance (classifier features, not FID) against the teacher", ""]
        s = report["settings"]
        lines += [
            f"The ten class prompts at W = {s['guidance']:g}, {s['fd_n']} images per seed (seeds"
            f" {', '.join(map(str, report['seeds']))}, the same noise for every model); FD / teacher's is the mean of the"
            " per-seed ratios with a paired bootstrap 95% interval.",
            "",
            "| model | steps | NFE / image | FD (by seed) | FD / teacher's | accuracy (diff) | precision / recall |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["fd"]:
            if "fd_vs_teacher" in r:  # a student's row; the teacher's comes first, as the reference
                ratio = with_interval(r["fd_vs_teacher"], r["fd_vs_teacher_lo"], r["fd_vs_teacher_hi"])
                acc = f"{r['accuracy']:.3f} ({r['accuracy_diff']:+.3f})"
            else:
                ratio, acc = "1 (the reference)", f"{r['accuracy']:.3f}"
            fd = f"{r['frechet_distance']:.2f} ({', '.join(f'{x:.2f}' for x in r['fd_by_seed'])})"
            pr = f"{r['precision']:.3f} / {r['recall']:.3f}"
            lines.append(f"| {r['model']} | {r['steps']} | {r['nfe']} | {fd} | {ratio} | {acc} | {pr} |")
    return "\n".join(lines) + "\n"


def _change(r: dict) -> str:
    if r.get("change_lo") is None:
        return f"{r['change']:+.3f}"
    return f"{r['change']:+.3f} [{r['change_lo']:+.3f}, {r['change_hi']:+.3f}]"


def _asked(r: dict) -> str:
    if not r["moved"]:
        return "no"
    return "yes" if r.get("moved_clearly", True) else "yes (interval spans 0)"


def main(argv=None) -> int:
    from analysis.classifier import load_classifier
    from analysis.metrics import load_reference
    from demo.core.models import ModelFolderError, load_model_folder

    p = argparse.ArgumentParser(prog="python -m analysis.text_report", description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", default=None, help="a few-step student of the teacher (its card's steps are used)")
    p.add_argument("--seeds", type=parse_seeds, default=[0, 1])
    p.add_argument("--steps", type=arg_int(1, MAX_TIMESTEPS), default=32)
    p.add_argument("--guidance", type=arg_float(GUIDANCE_MIN, GUIDANCE_MAX), default=2.0)
    p.add_argument("--n-class", type=arg_int(1, MAX_SAMPLES), default=100, help="images per class prompt and seed")
    p.add_argument("--n-attr", type=arg_int(2, MAX_SAMPLES), default=50, help="images per attribute prompt")
    p.add_argument(
        "--attr-steps", type=arg_int(1, MAX_TIMESTEPS), default=None, help="DDIM steps of the attribute table (default: --steps)"
    )
    p.add_argument("--fd-n", type=arg_int(2, MAX_SAMPLES), default=2000)
    p.add_argument("--teacher-steps", type=arg_int(1, MAX_TIMESTEPS), default=64)
    p.add_argument("--out", default=str(RESULTS_DIR / "text"))
    args = p.parse_args(argv)
    try:  # every folder is checked before the first image is sampled, not hours later
        teacher = load_model_folder(args.teacher)
        if not teacher.is_text:
            raise ValueError(f"--teacher {args.teacher} is not a text-conditional model folder")
        student = load_model_folder(args.student) if args.student else None
        if student is not None and not student.is_text:
            raise ValueError(f"--student {args.student} is not a text-conditional model folder")
        for flag in ("steps", "attr_steps", "teacher_steps"):  # at most the teacher's training timesteps
            if getattr(args, flag) is not None:
                whole(f"--{flag.replace('_', '-')}", getattr(args, flag), 1, teacher.schedule.num_train_timesteps)
    except (ValueError, ModelFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.time()
    out = Path(args.out)
    classifier, reference = load_classifier(), load_reference()

    def log(text):
        print(text, file=sys.stderr, flush=True)

    report = {
        "teacher": teacher.name,
        "settings": {k: getattr(args, k) for k in ("steps", "guidance", "n_class", "n_attr", "fd_n", "teacher_steps")},
        "seeds": args.seeds,
        "class_accuracy": class_accuracy(
            args.teacher, teacher, args.n_class, args.steps, args.guidance, args.seeds, classifier, log
        ),
    }
    attr_steps = args.attr_steps or args.steps
    report["settings"]["attr_steps"] = attr_steps
    report["attributes"] = attribute_rows(
        teacher,
        args.n_attr,
        attr_steps,
        (1.0, 2.0),
        args.seeds[0],
        folder=args.teacher,
        cache_dir=out / "attribute-rows",
        log=log,
    )
    report["attribute_moved"] = moved_share(report["attributes"])
    if student is not None:
        k = student.card.steps or 4
        rows = [(student.name, args.student, student, k), (f"{teacher.name} (its own DDIM)", args.teacher, teacher, k)]
        report["fd"] = fd_rows(
            args.teacher, teacher, rows, args.seeds, args.fd_n, args.teacher_steps, args.guidance, classifier, reference, log
        )
    report["meta"] = report_meta(seconds=round(time.time() - start, 1))
    out.mkdir(parents=True, exist_ok=True)
    (out / "text.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "text.md").write_text(markdown(report))
    print(json.dumps({"out": str(out), "class_accuracy": report["class_accuracy"]["mean"], **report["attribute_moved"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
