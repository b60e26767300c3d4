"""The evaluation protocol that decides a goal: cached per-seed feature sets, equal-size precision/recall, and paired
bootstrap intervals for a student-over-teacher ratio (ARCHITECTURE.md).

1. **Same seeds, same noise.** Every model is sampled at the same seeds; a seed fixes the initial noise and the
   cycled labels (`demo.core.generate.generate`), so sample i of the teacher and sample i of a student start from the
   same z_T and class. Each (model weights, sampling settings, seed, n) is sampled once: its classifier features,
   probabilities, labels and radial spectrum are cached (`sample_features`, safetensors under `FEATURES_DIR`), so
   adding a seed, a model or a bootstrap never re-samples what is already there.
2. **Equal-size precision/recall** (Kynkäänniemi et al. 2019 compare equal real and generated sets: the k-NN radii
   grow as a set shrinks, so unequal sizes bias both numbers). `equal_size_precision_recall` subsamples the real
   reference set (seeded) to the generated set's size, class by class when labels are known, so per-class precision
   compares equal sets too.
3. **Goal ratios with an interval** (`compare`): the ratio student FD / teacher FD is computed per seed and averaged
   over seeds; its interval is a paired bootstrap, explained in `bootstrap_fds` and `ratio_interval`.
4. **A protocol key.** `PROTOCOL` enters every cached row's key and every report's meta, so rows computed under the
   earlier protocol (unequal P/R sets, one seed, no intervals) are recomputed, never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analysis.metrics import frechet_distance, gaussian_stats, reference_metrics
from demo.core.paths import DEFAULT_RUNS_DIR, RESULTS_DIR

PROTOCOL = "eval-v2"  # v1: one seed, P/R against 3000 real points whatever n; v2: this module
FEATURES_VERSION = 1  # bump when what a cached feature file holds changes
FEATURES_DIR = Path(os.environ.get("GDL_FEATURES_DIR", DEFAULT_RUNS_DIR / "eval-features"))
# Read-only feature sets committed with the repo: the shipped teacher's sets at the settings the reports use (sampling
# the 4M-parameter teacher for 2 x 2000 images costs 30-45 CPU minutes; a student's one-step set costs seconds), so a
# report re-run on a fresh clone samples only what changed. Consulted after FEATURES_DIR, never written.
SHIPPED_FEATURES_DIR = RESULTS_DIR / "eval-features"
BOOTSTRAP = 500  # replicates: the 2.5/97.5 percentiles of 500 draws move by ~0.01 on a ratio near 1
LEVEL = 0.95


# ---------------------------------------------------------------------------------------------------------------
# 1. Feature sets: sampled once per (weights, settings, seed, n), cached.


@dataclass
class FeatureSet:
    feats: torch.Tensor  # [n, 128] classifier features
    probs: torch.Tensor  # [n, 10] classifier probabilities
    labels: torch.Tensor  # [n] the conditioning labels (classes cycled)
    nfe: int
    seconds: float
    spectrum_freq: np.ndarray  # radial power spectrum of the images (analysis.spectrum), for the HD report
    spectrum_power: np.ndarray
    hf_share: float
    key: dict


def classifier_key(classifier) -> str:
    """Identifies the feature classifier by its weights, so features of another classifier are never reused."""
    h = hashlib.sha256()
    for name, t in sorted(classifier.state_dict().items()):
        h.update(name.encode() + t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def features_key(
    weights: str,
    classifier: str,
    n: int,
    steps: int,
    guidance: float,
    sampler: str,
    seed: int,
    bf16: bool = False,
    interval=None,
    clip_x0: bool = False,
    batch_size: int = 250,
    class_label="all",
    prompt=None,
    negative_prompt=None,
) -> dict:
    """What a cached feature set depends on. `batch_size` stays in: the stochastic samplers' extra noise is drawn per batch.
    A text model's prompts enter the key only when given, so the keys of class-conditional sets are unchanged."""
    text = {} if prompt is None else {"prompt": list(prompt), "negative_prompt": negative_prompt or ""}
    return text | {
        "version": FEATURES_VERSION,
        "weights": weights,
        "classifier": classifier,
        "n": int(n),
        "steps": int(steps),
        "guidance": float(guidance),
        "sampler": sampler,
        "seed": int(seed),
        "bf16": bool(bf16),
        "interval": list(interval) if interval is not None else None,
        "clip_x0": bool(clip_x0),
        "batch_size": int(batch_size),
        "class_label": str(class_label),
    }


def _features_path(cache_dir: Path, name: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{name}-s{key['steps']}-W{key['guidance']:g}-seed{key['seed']}-n{key['n']}-{digest}.safetensors"


def _save_tensors(path: Path, tensors: dict) -> None:
    """Write a cache file through a temporary one, so a reader (or a stop mid-write) never leaves half a file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)


def _read_features(path: Path, key: dict):
    """The cached feature set at `path` if it is there, whole and of this `key`; None otherwise (a half-written or
    foreign file is resampled, never trusted)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        t = load_file(str(path))
        meta = json.loads(t["meta"].numpy().tobytes().decode())
        if meta["key"] != key:
            return None
        return FeatureSet(
            t["feats"],
            t["probs"],
            t["labels"],
            meta["nfe"],
            meta["seconds"],
            t["spectrum_freq"].numpy(),
            t["spectrum_power"].numpy(),
            meta["hf_share"],
            key,
        )
    except (OSError, ValueError, KeyError, SafetensorError):  # SafetensorError: a truncated header
        return None


def sample_features(
    folder,
    model,
    n: int,
    steps: int,
    guidance: float,
    sampler: str = "ddim",
    seed: int = 0,
    batch_size: int = 250,
    bf16: bool = False,
    interval=None,
    clip_x0: bool = False,
    classifier=None,
    cache_dir=None,
    log=None,
    class_label="all",
    prompt=None,
    negative_prompt=None,
) -> FeatureSet:
    """The features of `n` samples of a model folder at one seed, sampled on the first call and read from the cache after.

    `interval` is a parsed guidance interval (`demo.core.guidance.parse_interval`) or None. `cache_dir=False` disables the
    cache; with `cache_dir=None` a set missing from `FEATURES_DIR` is looked up in `SHIPPED_FEATURES_DIR` (read-only)
    before it is sampled. `log(text)` hears about each sampling run (e.g. a progress line on stderr). A text model takes `prompt` (a
    list; with `class_label` "all" the samples cycle through it, so prompt k can name class k) and `negative_prompt`.
    """
    from analysis.classifier import classify, load_classifier
    from analysis.evaluate import weights_key
    from analysis.spectrum import high_frequency_share, radial_power_spectrum
    from demo.core.generate import generate

    classifier = classifier or load_classifier(device=model.device)
    key = features_key(
        weights_key(folder),
        classifier_key(classifier),
        n,
        steps,
        guidance,
        sampler,
        seed,
        bf16,
        interval,
        clip_x0,
        batch_size,
        class_label,
        prompt,
        negative_prompt,
    )
    path = _features_path(Path(FEATURES_DIR if cache_dir is None else cache_dir or "."), model.name, key)
    if cache_dir is not False:
        shipped = [_features_path(SHIPPED_FEATURES_DIR, model.name, key)] if cache_dir is None else []
        for candidate in [path, *shipped]:
            fs = _read_features(candidate, key)
            if fs is not None:
                return fs
    options = {"bf16": bf16, **({"interval": interval} if interval is not None else {}), **({"clip_x0": True} if clip_x0 else {})}
    if prompt is not None:
        options |= {"prompt": list(prompt), "negative_prompt": negative_prompt}
    gen = generate(model, n, class_label, steps, guidance, sampler, seed, batch_size, **options)
    feats, probs = classify(classifier, gen.images)
    freq, power = radial_power_spectrum(gen.images)
    fs = FeatureSet(
        feats,
        probs,
        gen.labels.long(),
        gen.nfe,
        round(gen.seconds, 3),
        np.asarray(freq, dtype=np.float64),
        np.asarray(power, dtype=np.float64),
        high_frequency_share(gen.images),
        key,
    )
    if log is not None:
        log(f"{model.name}: {n} samples at {steps} steps, W={guidance:g}, seed {seed} in {gen.seconds:.0f} s")
    if cache_dir is not False:
        meta = json.dumps({"key": key, "nfe": fs.nfe, "seconds": fs.seconds, "hf_share": fs.hf_share})
        _save_tensors(
            path,
            {
                "feats": feats.float().contiguous(),
                "probs": probs.float().contiguous(),
                "labels": fs.labels.contiguous(),
                "spectrum_freq": torch.from_numpy(fs.spectrum_freq),
                "spectrum_power": torch.from_numpy(fs.spectrum_power),
                "meta": torch.frombuffer(bytearray(meta.encode()), dtype=torch.uint8),
            },
        )
    return fs


def real_pool(reference: dict, classifier=None, cache_dir=None, data_dir=None) -> torch.Tensor:
    """The real features the bootstrap resamples: the whole test set (whose statistics the Fréchet distance uses), cached
    beside the feature sets; the shipped 3000-image reference subset when the dataset is not at hand."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from analysis.classifier import classify, load_classifier

    try:
        from demo.core.data import load_fashion_mnist, to_model_space

        classifier = classifier or load_classifier()
        path = Path(FEATURES_DIR if cache_dir is None else cache_dir) / f"real-test-{classifier_key(classifier)}.safetensors"
        if path.is_file():
            try:
                return load_file(str(path))["feats"]
            except (OSError, KeyError, SafetensorError):  # a half-written cache file is recomputed
                pass
        x, _ = load_fashion_mnist("test", data_dir)
        feats, _ = classify(classifier, to_model_space(x))
        _save_tensors(path, {"feats": feats.float().contiguous()})
        return feats
    except (FileNotFoundError, OSError, ValueError):
        return reference["subset_feats"]


# ---------------------------------------------------------------------------------------------------------------
# 2. Metrics of one feature set (precision/recall on equal real and generated sets: analysis.metrics).


def feature_metrics(fs: FeatureSet, reference: dict, seed: int = 0) -> dict:
    """The metrics of one feature set against the shipped reference (`analysis.metrics.reference_metrics`: P/R on
    equal sets subsampled with `seed`), with its NFE, seconds and high-frequency share."""
    m = reference_metrics(reference, fs.feats, fs.probs, fs.labels, pr_seed=seed)
    return {**m, "nfe": fs.nfe, "seconds": fs.seconds, "hf_share": fs.hf_share}


MEAN_KEYS = (
    "frechet_distance",
    "kid",
    "precision",
    "recall",
    "accuracy",
    "confidence",
    "diversity",
    "diversity_ratio",
    "hf_share",
    "seconds",
)


def mean_metrics(per_seed: list[dict], seeds: list[int]) -> dict:
    """Metrics at several seeds folded into one row: the mean of each number, the per-seed Fréchet distance and
    accuracy kept, per-class lists averaged where every seed has a value."""
    first = per_seed[0]
    out = {**first, **{k: float(np.mean([m[k] for m in per_seed])) for k in MEAN_KEYS if first.get(k) is not None}}
    for key in ("per_class_accuracy", "per_class_precision"):
        if key in first:
            out[key] = [
                None if any(m[key][c] is None for m in per_seed) else float(np.mean([m[key][c] for m in per_seed]))
                for c in range(len(first[key]))
            ]
    out["seeds"] = list(seeds)
    out["fd_by_seed"] = [m["frechet_distance"] for m in per_seed]
    out["accuracy_by_seed"] = [m["accuracy"] for m in per_seed]
    out["protocol"] = PROTOCOL
    return out


# ---------------------------------------------------------------------------------------------------------------
# 3. Paired bootstrap of Fréchet-distance ratios.


def _trace_sqrt_product(s_real: np.ndarray, cov: np.ndarray) -> float:
    """Tr((Σ_r Σ_g)^½) = Σ √eig(Σ_r^½ Σ_g Σ_r^½): a symmetric eigenproblem, ~5x faster than sqrtm and never complex."""
    ev = np.linalg.eigvalsh(s_real @ cov @ s_real)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def _sym_sqrt(cov: np.ndarray) -> np.ndarray:
    ev, vec = np.linalg.eigh(cov)
    return (vec * np.sqrt(np.clip(ev, 0, None))) @ vec.T


_REAL_DRAWS: dict = {}


def _real_draws(pool: torch.Tensor, replicates: int, boot_seed: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Per replicate b: (μ_r, Σ_r^½, Tr Σ_r) of the real pool resampled with replacement. The draw depends only on
    (pool, replicates, boot_seed), so every model and seed in a report sees the same real replicate b; memoised."""
    x = pool.double().numpy()
    memo = (_fingerprint(pool), replicates, boot_seed)
    if memo not in _REAL_DRAWS:
        rng = np.random.default_rng([boot_seed, 0])
        draws = []
        for _ in range(replicates):
            counts = np.bincount(rng.integers(0, len(x), len(x)), minlength=len(x)).astype(np.float64)
            mu = counts @ x / len(x)
            xc = x - mu
            cov = (xc * counts[:, None]).T @ xc / (len(x) - 1)
            draws.append((mu, _sym_sqrt(cov), float(np.trace(cov))))
        _REAL_DRAWS.clear()  # one pool at a time: each entry holds `replicates` 128x128 matrices
        _REAL_DRAWS[memo] = draws
    return _REAL_DRAWS[memo]


def generated_indices(n: int, seed: int, replicates: int, boot_seed: int) -> np.ndarray:
    """[replicates, n] resampling indices of the generated set at one sampling seed: the same for every model at that
    seed (teacher and students are paired sample by sample) and independent across seeds."""
    return np.random.default_rng([boot_seed, 1, int(seed), int(n)]).integers(0, n, (replicates, n))


def bootstrap_fds(
    feats: torch.Tensor, pool: torch.Tensor, seed: int, replicates: int = BOOTSTRAP, boot_seed: int = 0
) -> np.ndarray:
    """[replicates] Fréchet distances of resampled generated features against resampled real features.

    What is resampled, and why. A goal ratio FD(student)/FD(teacher) has two sources of sampling error:
    - the generated sets (n images per model and seed). Sample i of every model starts from the same noise z_T^i and
      label, so a bootstrap replicate draws one index vector at a seed (`generated_indices`) and applies it to the
      teacher and to every student alike: the pairing keeps the positive correlation between their errors, which a
      ratio benefits from (an independent resampling would overstate its spread). Seeds are independent sample sets
      and are resampled independently.
    - the real reference (the 10,000 test images whose Gaussian the distance is measured against): a finite draw
      from the data distribution, shared by numerator and denominator. Replicate b resamples it once (`_real_draws`,
      the same draw for every model and seed), so what the finite test set does to both distances largely cancels in
      the ratio rather than being counted twice.
    A Fréchet distance is biased upward by roughly (feature dimension)² / n, and a bootstrap set (with repeated
    points) adds a similar bias again, so replicate distances sit above the point estimate; `ratio_interval` keeps
    the spread of the replicate ratios and moves their median onto the point. The interval is therefore for the
    ratio *at this n*: the bias pulls every ratio toward 1 (more so at small n), which is why teacher and student
    are always compared at the same n, and why a goal is stated with its n.
    """
    x = feats.double().numpy()
    idx = generated_indices(len(x), seed, replicates, boot_seed)
    out = np.empty(replicates)
    for b, (mu_r, s_r, tr_r) in enumerate(_real_draws(pool, replicates, boot_seed)):
        xb = x[idx[b]]
        mu = xb.mean(0)
        cov = np.cov(xb, rowvar=False)
        d = mu - mu_r
        out[b] = d @ d + np.trace(cov) + tr_r - 2 * _trace_sqrt_product(s_r, cov)
    return out


def ratio_interval(
    point_by_seed: list[float], replicates_by_seed: list[np.ndarray], level: float = LEVEL
) -> tuple[float, float, float]:
    """(mean over seeds of the per-seed ratio, low, high): the replicates' percentile interval, re-centred on the point.

    `replicates_by_seed[s][b]`: the ratio at seed s in replicate b (numerator and denominator resampled with the same
    indices). The statistic of replicate b is the mean over seeds. A bootstrap set repeats points, which biases a
    Fréchet distance upward (as a smaller n would) and pulls replicate ratios toward 1, so the replicates' median sits
    off the point estimate; their spread is kept and their median moved onto the point. Bias-corrected percentiles
    (Efron's BC) would instead correct the *estimate* for that shift, which is the same n-dependent bias that the
    goals, stated at a fixed n, include, and at n ≲ d they collapse to a single value. So the interval is for the
    ratio at this n and these seeds' n samples per model: what another draw of samples (and of the test set) would give.
    """
    point = float(np.mean(point_by_seed))
    stats = np.mean(np.stack(replicates_by_seed), axis=0)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha]) - (np.median(stats) - point)
    return point, float(lo), float(hi)


_TEACHER_FDS: dict = {}


def _fingerprint(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def compare(
    student: list[FeatureSet],
    teacher: list[FeatureSet],
    seeds: list[int],
    pool: torch.Tensor,
    reference: dict,
    replicates: int = BOOTSTRAP,
    boot_seed: int = 0,
    level: float = LEVEL,
    teacher_fds: list[np.ndarray] | None = None,
) -> dict:
    """A student's goal ratios against the teacher, at the same seeds: the Fréchet-distance ratio (mean over seeds of
    the per-seed ratio) and the accuracy difference, each with a paired bootstrap interval.

    `teacher_fds` (the teacher's `bootstrap_fds` per seed) may be passed in to reuse them across students.
    """
    if [fs.key["seed"] for fs in student] != list(seeds) or [fs.key["seed"] for fs in teacher] != list(seeds):
        raise ValueError(f"student and teacher feature sets must come from the seeds {seeds} in that order")
    if any(len(s.feats) != len(t.feats) for s, t in zip(student, teacher)):
        raise ValueError("student and teacher need the same n at each seed to be paired sample by sample")
    mu_r, cov_r = reference["mu"].numpy(), reference["cov"].numpy()
    fd = lambda fs: frechet_distance(*gaussian_stats(fs.feats), mu_r, cov_r)
    if teacher_fds is None:  # one teacher serves many students: its replicates are memoised
        memo = (
            *(_fingerprint(t.feats) for t in teacher),
            _fingerprint(pool),
            tuple(seeds),
            replicates,
            boot_seed,
        )  # by content, not by key
        if memo not in _TEACHER_FDS:
            _TEACHER_FDS[memo] = [bootstrap_fds(t.feats, pool, s, replicates, boot_seed) for t, s in zip(teacher, seeds)]
        teacher_fds = _TEACHER_FDS[memo]
    ratios = [fd(s) / fd(t) for s, t in zip(student, teacher)]
    reps = [bootstrap_fds(s.feats, pool, seed, replicates, boot_seed) / t for s, seed, t in zip(student, seeds, teacher_fds)]
    ratio, lo, hi = ratio_interval(ratios, reps, level)
    # Accuracy difference: the same generated indices, so correct/incorrect pairs stay together.
    diffs, acc_reps = [], []
    for s, t, seed in zip(student, teacher, seeds):
        cs = (s.probs.argmax(1) == s.labels).double().numpy()
        ct = (t.probs.argmax(1) == t.labels).double().numpy()
        diffs.append(float(cs.mean() - ct.mean()))
        idx = generated_indices(len(cs), seed, replicates, boot_seed)
        acc_reps.append(cs[idx].mean(1) - ct[idx].mean(1))
    acc = np.mean(np.stack(acc_reps), axis=0)
    alpha = (1 - level) / 2
    return {
        "fd_ratio": ratio,
        "fd_ratio_lo": lo,
        "fd_ratio_hi": hi,
        "fd_ratio_by_seed": ratios,
        "accuracy_diff": float(np.mean(diffs)),
        "accuracy_diff_lo": float(np.quantile(acc, alpha)),
        "accuracy_diff_hi": float(np.quantile(acc, 1 - alpha)),
        "bootstrap": replicates,
        "level": level,
    }


def ratio_columns(c: dict, against: str, accuracy: bool = True) -> dict:
    """A report row's columns for one `compare` result: `fd_vs_<against>` with its interval and per-seed ratios, and
    (with `accuracy`) the accuracy difference with its interval and the bootstrap size."""
    cols = {
        f"fd_vs_{against}": c["fd_ratio"],
        f"fd_vs_{against}_lo": c["fd_ratio_lo"],
        f"fd_vs_{against}_hi": c["fd_ratio_hi"],
        f"fd_vs_{against}_by_seed": c["fd_ratio_by_seed"],
    }
    if accuracy:
        cols |= {k: c[k] for k in ("accuracy_diff", "accuracy_diff_lo", "accuracy_diff_hi", "bootstrap")}
    return cols


def report_meta(**settings) -> dict:
    """The `meta` block every report writes: when, with which torch and thread count, under which protocol; plus the
    report's own settings."""
    return {
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "protocol": PROTOCOL,
        **settings,
    }


def with_interval(value, lo, hi) -> str | None:
    """A table cell: '1.12 [1.05, 1.19]' (3 significant digits), or None when there is no value."""
    if value is None:
        return None
    return f"{value:.3g} [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else f"{value:.3g}"


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; anything else is one sentence."""
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds must be distinct non-negative integers separated by commas, got {text!r}")
    return seeds


# --bf16 of the reports: bfloat16 autocast for every model (the bare flag), for the teacher only, or for none. "teacher"
# exists for CPUs without bfloat16 instructions, where autocast emulates it ~20x slower than float32 (measured: one
# batch of 64 through the 3.9M-parameter UNet, 26 s against 1.3 s on an AVX2-only EPYC): the teacher's sets are read
# from the shipped bf16 ones while the students are sampled in float32. Each feature set's key records its own
# precision, so a float32 set is never mistaken for a bf16 one.
BF16_MODES = ("all", "teacher", "none")


def add_bf16_argument(parser) -> None:
    parser.add_argument(
        "--bf16",
        nargs="?",
        const="all",
        default="none",
        choices=BF16_MODES,
        help="bfloat16 autocast: for every model (the bare flag, 'all'), for the teacher only ('teacher': its shipped "
        "sets are bf16; students in float32, for CPUs without bfloat16 instructions), or 'none'",
    )


def bf16_for(mode, teacher: bool) -> bool:
    """Whether a model samples under bf16 autocast in `mode` (a BF16_MODES word; True/False as 'all'/'none')."""
    mode = {True: "all", False: "none"}.get(mode, mode)
    return mode == "all" or (mode == "teacher" and teacher)


def bf16_text(mode) -> str:
    """The precision clause of a report's settings line."""
    if bf16_for(mode, False):
        return ", bf16 autocast"
    return ", bf16 autocast for the teacher (students in float32)" if bf16_for(mode, True) else ""
