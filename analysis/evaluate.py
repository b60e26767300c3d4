"""`python -m analysis.evaluate --model DIR [--steps S --guidance W --sampler NAME --seed X | --seeds 0,1 --class-label all] --n N --json`

Samples N images (classes cycled) and prints their classifier-feature metrics against the shipped Fashion-MNIST
test-set reference: Fréchet distance, KID, precision/recall, class accuracy, within-class diversity, NFE, seconds.
With `--seeds 0,1` every number is the mean over the seeds (`analysis.protocol`), each seed's features are cached,
and `fd_by_seed` / `accuracy_by_seed` keep the per-seed values.

Sharded: under `torchrun --nproc_per_node P` or `accelerate launch --num_processes P` each process samples its own
contiguous slice of the N sample indices (the same initial noise and labels a single process would use) and
classifies it; the features are gathered on rank 0, which alone computes and prints the metrics. With the
deterministic samplers (ddim, dpmsolver++) the result equals a single-process run's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from analysis.classifier import classify, load_classifier
from analysis.metrics import evaluate_images, load_reference, reference_metrics
from analysis.protocol import PROTOCOL, feature_metrics, mean_metrics, parse_seeds, sample_features
from demo.core.card import CARD_FILE, read_card, write_card
from demo.core.cli import add_sampling_args, prompts_from_args
from demo.core.guidance import parse_interval
from demo.core.models import ModelFolderError, load_model_folder


def evaluate_model(
    model,
    n=2000,
    steps=64,
    guidance=2.0,
    sampler="ddim",
    seed=0,
    class_label="all",
    batch_size=250,
    classifier=None,
    reference=None,
    **options,
) -> dict:
    from demo.core.generate import SamplingRequest, run

    # The settings are checked once, into a request; the row reports the parsed interval from it.
    request = SamplingRequest.check(model, n, class_label, steps, guidance, sampler, seed, batch_size, **options)
    classifier = classifier or load_classifier(device=model.device)
    reference = reference or load_reference()
    gen = run(model, request)
    metrics = evaluate_images(gen.images, gen.labels, classifier, reference)
    return {**_row_head(model, n, steps, guidance, sampler, seed, options, gen.nfe, gen.seconds, request.interval), **metrics}


def _row_head(model, n, steps, guidance, sampler, seed, options, nfe, seconds, interval=None) -> dict:
    """The settings and timing columns every evaluation row starts with (one process or sharded)."""
    return {
        "protocol": PROTOCOL,
        "model": model.name,
        "steps": steps,
        "guidance": guidance,
        "sampler": sampler,
        "seed": seed,
        "bf16": bool(options.get("bf16", False)),
        **({"guidance_interval": list(interval)} if interval is not None else {}),
        "nfe": nfe,
        "seconds": round(seconds, 3),
        "img_per_s": round(n / seconds, 2),
    }


def evaluate_seeds(
    folder,
    model,
    seeds: list[int],
    n=2000,
    steps=64,
    guidance=2.0,
    sampler="ddim",
    class_label="all",
    batch_size=250,
    classifier=None,
    reference=None,
    bf16=False,
    interval=None,
    clip_x0=False,
    cache_dir=None,
    log=None,
    prompt=None,
    negative_prompt=None,
) -> tuple[dict, list]:
    """(row, feature sets): a model folder at several seeds under `analysis.protocol` — every number the mean over the
    seeds, the per-seed Fréchet distance and accuracy kept — and the per-seed feature sets (cached: adding a seed
    samples only that seed). `interval` is a parsed guidance interval or None; a text model takes `prompt` (a list,
    cycled: with the ten class prompts in class order the labels are Fashion-MNIST's) and `negative_prompt`."""
    classifier = classifier or load_classifier(device=model.device)
    reference = reference or load_reference()
    sets = [
        sample_features(
            folder,
            model,
            n,
            steps,
            guidance,
            sampler,
            seed,
            batch_size,
            bf16,
            interval,
            clip_x0,
            classifier,
            cache_dir,
            log,
            class_label,
            prompt,
            negative_prompt,
        )
        for seed in seeds
    ]
    m = mean_metrics([feature_metrics(fs, reference, seed) for fs, seed in zip(sets, seeds)], seeds)
    row = {
        "model": model.name,
        "steps": steps,
        "guidance": guidance,
        "sampler": sampler,
        "seed": seeds[0],
        "bf16": bool(bf16),
        **({"guidance_interval": list(interval)} if interval is not None else {}),
        **m,
        "img_per_s": round(n / m["seconds"], 2) if m["seconds"] else None,
    }
    return row, sets


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of the sample indices process `rank` of `world` handles: contiguous, disjoint, sizes within one."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank {rank!r} of {world!r}")
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def generate_shard(model, n, class_label, steps, guidance, sampler, seed, batch_size, rank: int, world: int, **options):
    """This process's slice of an n-sample run: the slice of the run's initial noise and labels, not a new seed.

    The stochastic samplers' extra noise is drawn per process (seeded by seed and rank), so only the deterministic
    samplers reproduce a single-process run exactly.
    """
    from demo.core.generate import generate, parse_labels
    from demo.core.samplers import initial_noise

    prompts = options.get("prompt")
    labels = parse_labels(class_label, n, len(prompts) if prompts else model.card.num_classes)
    noise = initial_noise(seed, n, model.sample_shape)
    lo, hi = shard_bounds(n, rank, world)
    return generate(
        model,
        hi - lo,
        class_label,
        steps,
        guidance,
        sampler,
        seed + 7919 * rank,
        batch_size,
        noise=noise[lo:hi],
        labels=labels[lo:hi],
        **options,
    )


def evaluate_sharded(
    model, n, steps, guidance, sampler, seed, class_label, batch_size, rank: int, world: int, gather, **options
) -> dict | None:
    """One process's part of a sharded evaluation; `gather(obj)` returns every rank's obj on rank 0 (None elsewhere).

    Returns the metrics row on rank 0 and None on the other ranks.
    """
    gen = generate_shard(model, n, class_label, steps, guidance, sampler, seed, batch_size, rank, world, **options)
    feats, probs = classify(load_classifier(device=model.device), gen.images)
    parts = gather((feats, probs, gen.labels, gen.seconds))
    if parts is None:
        return None
    feats, probs, labels = (torch.cat([p[i] for p in parts]) for i in range(3))
    seconds = max(p[3] for p in parts)  # wall time: the slowest process
    return {
        **_row_head(model, n, steps, guidance, sampler, seed, options, gen.nfe, seconds),
        "processes": world,
        **reference_metrics(load_reference(), feats, probs, labels),
    }


def _distributed_gather():
    """(rank, world, gather) under torchrun / accelerate (gloo on CPU, nccl on GPU), or None for one process."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not dist.is_initialized():
        if torch.cuda.is_available():
            # NCCL runs its collectives (gather_object's too) on the current CUDA device: without this every rank would
            # use cuda:0. LOCAL_RANK is set by torchrun and accelerate.
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()

    def gather(obj):
        out = [None] * world if rank == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out

    return rank, world, gather


def format_value(v) -> str:
    """A table cell: 3 significant digits, thousands separators for large numbers, "—" for a missing value."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def markdown_table(rows: list[dict], cols) -> str:
    """A markdown table of `rows` (dicts) over the columns `cols`, one line per row, ending without a newline."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(format_value(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def weights_key(folder) -> str:
    """Identifies a model folder's weights by content (SHA-256 of its denoiser's safetensors, and of a text model's
    text encoder, which shapes every sample too), so a copied folder keeps it."""
    import hashlib

    from demo.core.layout import denoiser_dir
    from demo.core.text import TEXT_ENCODER_DIR

    h = hashlib.sha256()
    for f in sorted((denoiser_dir(folder) or Path(folder) / "unet").glob("*.safetensors")):
        h.update(f.name.encode() + f.read_bytes())
    for f in sorted((Path(folder) / TEXT_ENCODER_DIR).glob("*.safetensors")):  # none in a class-conditional folder
        h.update(b"text_encoder/" + f.name.encode() + f.read_bytes())
    return h.hexdigest()[:32]


def cached_row(cache_dir, name: str, key: dict, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """(row, computed): `compute()`'s row, reused from `cache_dir/name.json` while `key` (weights, settings) is unchanged.

    Reports over many models use it so that a model added or retrained later costs only its own evaluation.
    """
    path = Path(cache_dir) / f"{name}.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
        except ValueError:  # a half-written cache file is recomputed
            cached = {}
        if cached.get("key") == key:
            return cached["row"], False
    row = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "row": row}) + "\n")
    tmp.replace(path)
    return row, True


def evaluate_cached(
    folder,
    model,
    cache_dir,
    n,
    steps,
    guidance,
    sampler="ddim",
    seed=0,
    batch_size=250,
    bf16=False,
    classifier=None,
    reference=None,
    interval=None,
) -> tuple[dict, bool]:
    """(row, computed): `evaluate_model`'s row for a model folder, cached in `cache_dir` by weights and settings.

    The guided-distillation report and the benchmark share one cache, so a (model, steps, W) row is sampled once.
    A guidance `interval` (`demo.core.guidance.parse_interval`) is part of the key and of the row's file name.
    """
    interval = parse_interval(interval, model.schedule.num_train_timesteps)
    settings = {"n": n, "seed": seed, "batch_size": batch_size, "bf16": bf16, "sampler": sampler}
    key = {"protocol": PROTOCOL, "weights": weights_key(folder), "steps": steps, "guidance": guidance, **settings}
    name = f"{model.name}-{sampler}-s{steps}-W{guidance:g}"
    if interval is not None:
        key["interval"], name = list(interval), f"{name}-gi{interval[0]}-{interval[1]}"
    return cached_row(
        cache_dir,
        name,
        key,
        lambda: evaluate_model(
            model, n, steps, guidance, sampler, seed, "all", batch_size, classifier, reference, bf16=bf16, interval=interval
        ),
    )


def add_teacher_arg(p: argparse.ArgumentParser) -> None:
    """The reports' `--teacher`: None unless given, resolved by `demo.core.card.named_teacher` from the student cards."""
    p.add_argument(
        "--teacher",
        default=None,
        help="default: the teacher named on the student cards (a folder beside them), else assets/models/fmnist-teacher",
    )


def _sample_size(row: dict) -> tuple[set, int] | None:
    """(seeds, n) of a card row, or None when the row does not say which seeds it was measured over."""
    seeds = row.get("seeds")
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        return None
    n = row.get("n")
    return set(seeds), n if isinstance(n, int) else 0


def store_card_metrics(folder, tag: str, metrics: dict) -> bool:
    """Record `metrics` under `tag` in a model folder's card.json (the app shows them); False when it has no card, or
    when the card already holds a row under `tag` measured over more samples: a strict superset of the seeds at no
    smaller n (a one-seed check run must not replace the two-seed row that a teacher shares with every report)."""
    if not (Path(folder) / CARD_FILE).is_file():
        return False
    card = read_card(folder, strict=True)
    old = card.get("metrics", {}).get(tag)
    old_size = _sample_size(old) if isinstance(old, dict) else None
    new_size = _sample_size(metrics)
    if old_size is not None and new_size is not None:
        (old_seeds, old_n), (new_seeds, new_n) = old_size, new_size
        if old_seeds > new_seeds and old_n >= new_n:
            print(
                f"{Path(folder).name}: kept its card's {tag} row (seeds {sorted(old_seeds)}) over this run's "
                f"(seeds {sorted(new_seeds)}).",
                file=sys.stderr,
            )
            return False
    card.setdefault("metrics", {})[tag] = metrics
    write_card(folder, card)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.evaluate", description=__doc__.splitlines()[0])
    add_sampling_args(p, n=2000, batch_size=250)
    p.add_argument("--clip-x0", action="store_true")
    p.add_argument("--bf16", action="store_true", help="run the network under bfloat16 autocast")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object (default: a readable table)")
    p.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds (e.g. 0,1): every number the mean over them, each seed's "
        "features cached (analysis.protocol; GDL_FEATURES_DIR) so a seed is sampled once",
    )
    args = p.parse_args(argv)
    distributed = _distributed_gather()
    try:
        prompts = prompts_from_args(args)  # a text model's prompts (the labels index them)
        text = (
            {}
            if prompts is None and args.negative_prompt is None
            else {"prompt": prompts, "negative_prompt": args.negative_prompt}
        )
        if args.seeds is not None and distributed is not None:
            raise ValueError("--seeds runs in one process; shard a single --seed instead")
        if args.seeds is not None:
            model = load_model_folder(args.model, device=args.device)
            interval = parse_interval(args.guidance_interval, model.schedule.num_train_timesteps)
            result, _ = evaluate_seeds(
                args.model,
                model,
                parse_seeds(args.seeds),
                args.n,
                args.steps,
                args.guidance,
                args.sampler,
                args.class_label,
                args.batch_size,
                bf16=args.bf16,
                interval=interval,
                clip_x0=args.clip_x0,
                log=lambda line: print(line, file=sys.stderr, flush=True),
                **text,
            )
        elif distributed is None:
            model = load_model_folder(args.model, device=args.device)
            result = evaluate_model(
                model,
                args.n,
                args.steps,
                args.guidance,
                args.sampler,
                args.seed,
                args.class_label,
                args.batch_size,
                clip_x0=args.clip_x0,
                bf16=args.bf16,
                interval=args.guidance_interval,
                **text,
            )
        else:
            rank, world, gather = distributed
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
            model = load_model_folder(args.model, device=device)
            result = evaluate_sharded(
                model,
                args.n,
                args.steps,
                args.guidance,
                args.sampler,
                args.seed,
                args.class_label,
                args.batch_size,
                rank,
                world,
                gather,
                clip_x0=args.clip_x0,
                bf16=args.bf16,
                interval=args.guidance_interval,
                **text,
            )
    except (ValueError, ModelFolderError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if distributed is not None:
            torch.distributed.destroy_process_group()
    if result is None:
        return 0  # a rank other than 0: rank 0 prints
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>20}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
