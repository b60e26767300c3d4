"""The validation layer at the boundary: the rules every user-facing value passes through once, in the app's handlers,
the CLIs' argument parsing and the start-up settings, so the core receives typed, valid values.

Every failure is a `ValueError` (an `argparse.ArgumentTypeError` for a CLI flag) whose message is one sentence that
names the field and the accepted values. Also here: the model-folder content checks (card, scheduler, TIRT file,
read as JSON or a safetensors header only), the per-request work budget and time limit, and `public_text`, which
keeps absolute server paths out of what a user sees. No torch, no gradio at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path

from demo.core.paths import REPO_ROOT

SEED_MAX = 2**31 - 1  # torch.manual_seed takes 64 bits, but numpy and the UI's JSON numbers are safe below this
JOB_ID_MAX = 10**9
NAME_MAX = 255  # one path component (NAME_MAX on Linux)
PATH_MAX = 1024
SHOW_MAX = 100  # longest echo of a bad value in a message


def show(value) -> str:
    """A short repr of a user's value for an error message (a 10 kB string is not echoed back whole)."""
    text = repr(value)
    return text if len(text) <= SHOW_MAX else text[: SHOW_MAX - 1] + "…"


def _span(lo, hi) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" ≥ {lo:g}" if isinstance(lo, float) else f" ≥ {lo}"
    if lo is None:
        return f" ≤ {hi:g}" if isinstance(hi, float) else f" ≤ {hi}"
    return f" in {lo:g}..{hi:g}" if isinstance(lo, float) or isinstance(hi, float) else f" in {lo}..{hi}"


def whole(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """An integer from a UI number, a client's JSON or a CLI string ("3", 3.0); NaN, 1.5, "abc", True are refused."""
    bad = ValueError(f"{name} must be a whole number{_span(lo, hi)}, got {show(value)}")
    if isinstance(value, bool) or value is None:
        raise bad
    if isinstance(value, int):
        v = value
    else:
        try:
            f = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError, OverflowError):
            raise bad from None
        if not math.isfinite(f) or f != int(f):
            raise bad
        v = int(f)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise bad
    return v


def number(
    name: str, value, lo: float | None = None, hi: float | None = None, open_lo: bool = False, open_hi: bool = False
) -> float:
    """A finite float in [lo, hi] (or (lo, hi) with the open flags); NaN, inf and text are refused."""
    left, right = ("(" if open_lo else "["), (")" if open_hi else "]")
    span = f" in {left}{lo:g}, {hi:g}{right}" if lo is not None and hi is not None else _span(lo, hi)
    bad = ValueError(f"{name} must be a number{span}, got {show(value)}")
    if isinstance(value, bool) or value is None:
        raise bad
    try:
        v = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise bad from None
    if not math.isfinite(v):
        raise bad
    if lo is not None and (v < lo or (open_lo and v == lo)):
        raise bad
    if hi is not None and (v > hi or (open_hi and v == hi)):
        raise bad
    return v


def choice(name: str, value, choices) -> str:
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {show(value)}")
    return value


def seed(value, name: str = "seed") -> int:
    return whole(name, value, 0, SEED_MAX)


def job_id(value) -> int:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        raise ValueError("Choose a job first (start one, or click a row of the runs table).")
    return whole("job id", value, 1, JOB_ID_MAX)


def model_text(value, name: str = "model") -> str:
    """A model name or a path as text: a string (or a number a client sent), no NUL, no over-long name."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"Choose a {name}.")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{name} must be a model name or a path inside the model folders, got {show(value)}")
    text = str(value).strip()
    if "\0" in text or len(text) > PATH_MAX or any(len(part) > NAME_MAX for part in text.split("/")):
        raise ValueError(
            f"{name} must be a model name or a path of at most {PATH_MAX} characters ({NAME_MAX} per folder name), got {show(value)}"
        )
    return text


def model_list(value, name: str = "models") -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ValueError(f"Choose at least one of the {name}.")
    if len(items) > 64:
        raise ValueError(f"{name} must be at most 64 models, got {len(items)}")
    return [model_text(v, name) for v in items]


# ---- command-line flags: argparse types, so a bad flag is argparse's one line "argument --x: …" and exit code 2 ----


def arg_int(lo: int | None = None, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            return whole("it", text, lo, hi)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("it ")) from None

    parse.__name__ = "whole number"
    return parse


def arg_float(lo: float | None = None, hi: float | None = None, open_lo: bool = False, open_hi: bool = False):
    def parse(text: str) -> float:
        try:
            return number("it", text, lo, hi, open_lo, open_hi)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("it ")) from None

    parse.__name__ = "number"
    return parse


def arg_seed(text: str) -> int:
    return arg_int(0, SEED_MAX)(text)


def check_out_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """An output file whose folder exists (or can be made) and is writable, checked before any work is done."""
    out = Path(path)
    if not str(path).strip() or out.is_dir():
        raise ValueError(f"{flag} must be a file path, got {show(str(path))}")
    if len(str(path)) > PATH_MAX or any(len(p) > NAME_MAX for p in out.parts):
        raise ValueError(f"{flag} must be a path of at most {PATH_MAX} characters ({NAME_MAX} per name)")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag} must be in a folder that can be created, got {show(str(path))} ({e.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{flag} must be in a writable folder, got {show(str(path))}")
    return out


def check_out_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """A run folder: an existing folder or a new one that can be created (not a file)."""
    out = Path(path)
    if not str(path).strip() or len(str(path)) > PATH_MAX or any(len(p) > NAME_MAX for p in out.parts):
        raise ValueError(f"{flag} must be a folder path of at most {PATH_MAX} characters, got {show(str(path))}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} must be a folder, but {show(str(path))} is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag} must be a folder that can be created, got {show(str(path))} ({e.strerror})") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"{flag} must be a writable folder, got {show(str(path))}")
    return out


def default_device() -> str:
    """CUDA where the host has it, else the CPU: the default of every command's --device and of the app's catalog."""
    import torch  # here, not at import: the app's cold build reads settings without torch's model stack

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(text) -> str:
    """cpu, cuda or cuda:N (only with a GPU), mps (only on a Mac with Metal)."""
    import torch

    value = str(text).strip().lower()
    m = re.fullmatch(r"cuda(?::(\d+))?", value)
    if value == "cpu":
        return value
    if m:
        if not torch.cuda.is_available():
            raise ValueError(f"device must be cpu on this machine (it has no CUDA GPU), got {show(text)}")
        if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
            raise ValueError(f"device must be cpu or cuda:0..cuda:{torch.cuda.device_count() - 1}, got {show(text)}")
        return value
    if value == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device must be cpu on this machine (it has no Metal GPU), got {show(text)}")
        return value
    raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {show(text)}")


# ---- start-up settings: one sentence naming the variable and the accepted range ----


def env_int(name: str, default: int, lo: int, hi: int, env=None) -> int:
    raw = (env if env is not None else os.environ).get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return whole(name, raw, lo, hi)
    except ValueError:
        raise ValueError(f"{name} must be a whole number in {lo}..{hi}, got {show(raw)}") from None


def env_float(name: str, default: float, lo: float, hi: float, env=None) -> float:
    raw = (env if env is not None else os.environ).get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return number(name, raw, lo, hi)
    except ValueError:
        raise ValueError(f"{name} must be a number in {lo:g}..{hi:g}, got {show(raw)}") from None


def env_choice(name: str, default: str, choices, env=None) -> str:
    raw = (env if env is not None else os.environ).get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {show(raw)}")
    return value


def env_folder(name: str, default: str | os.PathLike, env=None) -> Path:
    """A folder the app writes to (the runs folder): it must exist or be creatable, and be writable."""
    raw = (env if env is not None else os.environ).get(name)
    folder = Path(raw) if raw and raw.strip() else Path(default)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        ok = folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
    except OSError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a writable folder (or one that can be created), got {show(str(folder))}")
    return folder


# ---- model folders: the contents every loader relies on, checked from JSON and headers before any weights load ----

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
MAX_TIMESTEPS = 100_000
MAX_CLASSES = 100_000


def _json_object(path: Path, what: str) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{what} is not readable JSON ({type(e).__name__}).") from None
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a JSON object, got a {type(d).__name__}.")
    return d


def _card_int(card: dict, key: str, lo: int, hi: int, where: str, optional: bool = True) -> int | None:
    if key not in card or (optional and card[key] is None):
        return None
    v = card[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{where}: {key} must be a whole number in {lo}..{hi}, got {show(v)}.")
    return v


def check_card(card: dict, where: str = "card.json") -> dict:
    """The card fields the app and the loaders read, with their types; unknown extra fields are allowed."""
    for key in ("name", "kind", "method", "teacher", "space", "description"):
        if card.get(key) is not None and not isinstance(card[key], str):
            raise ValueError(f"{where}: {key} must be a string, got {show(card[key])}.")
    if card.get("kind") not in (None, "teacher", "student"):
        raise ValueError(f"{where}: kind must be teacher or student, got {show(card['kind'])}.")
    if card.get("conditioning") not in (None, "class", "text"):
        raise ValueError(f"{where}: conditioning must be class or text, got {show(card['conditioning'])}.")
    k = _card_int(card, "num_classes", 0 if card.get("conditioning") == "text" else 1, MAX_CLASSES, where)
    k = 10 if k is None else k
    _card_int(card, "null_class", 0, MAX_CLASSES, where)
    _card_int(card, "steps", 1, MAX_TIMESTEPS, where)
    _card_int(card, "image_size", 1, 4096, where)
    _card_int(card, "channels", 1, 4, where)
    _card_int(card, "parameters", 0, 10**13, where)
    names = card.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) < k):
        raise ValueError(f"{where}: class_names must be a list of {k} strings.")
    if card.get("w_conditioned") is not None and not isinstance(card["w_conditioned"], bool):
        raise ValueError(f"{where}: w_conditioned must be true or false, got {show(card['w_conditioned'])}.")
    for key in ("guidance", "metrics", "training"):
        if card.get(key) is not None and not isinstance(card[key], dict):
            raise ValueError(f"{where}: {key} must be a JSON object, got {show(card[key])}.")
    return card


def check_scheduler_config(config: dict, where: str = "scheduler_config.json") -> dict:
    T = config.get("num_train_timesteps", 1000)
    if isinstance(T, bool) or not isinstance(T, int) or not 2 <= T <= MAX_TIMESTEPS:
        raise ValueError(f"{where}: num_train_timesteps must be a whole number in 2..{MAX_TIMESTEPS}, got {show(T)}.")
    pred = config.get("prediction_type", "epsilon")
    if pred not in PREDICTION_TYPES:
        raise ValueError(f"{where}: prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {show(pred)}.")
    for key in ("beta_start", "beta_end"):
        b = config.get(key)
        if b is not None and (isinstance(b, bool) or not isinstance(b, int | float) or not 0 < b < 1):
            raise ValueError(f"{where}: {key} must be a number in (0, 1), got {show(b)}.")
    if config.get("beta_schedule") is not None and not isinstance(config["beta_schedule"], str):
        raise ValueError(f"{where}: beta_schedule must be a string, got {show(config['beta_schedule'])}.")
    return config


def check_tirt(path: Path, num_train_timesteps: int, where: str = "tirt.safetensors") -> None:
    """DASH's TIRT logits: a safetensors file holding one float vector `lambda_t` of length T (header read only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
            shape = f.get_slice("lambda_t").get_shape() if "lambda_t" in keys else None
    except Exception as e:  # noqa: BLE001  (safetensors raises its own error types for a bad header)
        raise ValueError(f"{where} is not a readable safetensors file ({type(e).__name__}).") from None
    if shape is None:
        found = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        raise ValueError(f"{where} must hold a tensor named lambda_t, found {found or 'none'}.")
    if list(shape) != [num_train_timesteps]:
        raise ValueError(
            f"{where}: lambda_t must have shape [{num_train_timesteps}] (the schedule's timesteps), got {list(shape)}."
        )


def check_model_files(folder: str | os.PathLike, denoiser: str | os.PathLike) -> None:
    """Card, scheduler, denoiser config and TIRT file of a model folder whose layout is already checked."""
    folder, name = Path(folder), Path(folder).name
    _json_object(Path(denoiser) / "config.json", f"Model folder {name}'s {Path(denoiser).name}/config.json")
    sched = check_scheduler_config(
        _json_object(folder / "scheduler" / "scheduler_config.json", f"Model folder {name}'s scheduler config"),
        f"Model folder {name}'s scheduler config",
    )
    if (folder / "card.json").exists():
        check_card(_json_object(folder / "card.json", f"Model folder {name}'s card.json"), f"Model folder {name}'s card.json")
    if (folder / "tirt.safetensors").exists():
        check_tirt(folder / "tirt.safetensors", sched.get("num_train_timesteps", 1000), f"Model folder {name}'s tirt.safetensors")


# ---- the per-request work budget and time limit ----

DEFAULT_MAX_WORK = 16_384  # network evaluations × images per request: 64 images at 128 CFG teacher steps
DEFAULT_TIMEOUT_S = 90.0


class RequestTimeout(ValueError):
    """A request ran past its time limit; raised inside the sampling loop, so the request ends and its slot frees."""


_deadline: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("gdl_deadline", default=None)


@contextlib.contextmanager
def time_limit(seconds: float | None, end: float | None = None):
    """Within this block `check_time()` raises `RequestTimeout` once `seconds` (or the absolute monotonic `end`) pass."""
    if not seconds:
        yield
        return
    token = _deadline.set((end if end is not None else time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def check_time() -> None:
    """Called by the sampling loop once per step (`demo.core.generate`): stop a request that has run too long."""
    limit = _deadline.get()
    if limit is not None and time.monotonic() > limit[0]:
        raise RequestTimeout(
            f"This request ran past the {limit[1]:g} s time limit (GDL_REQUEST_TIMEOUT) and was stopped; use fewer steps or images."
        )


def check_work(cost: int, limit: int, what: str) -> None:
    """Refuse a request whose network evaluations × images exceed the budget, before any model runs."""
    if limit and cost > limit:
        raise ValueError(
            f"This request needs {cost:,} network evaluations ({what}), more than the limit of {limit:,} per request "
            "(GDL_MAX_WORK); use fewer steps, images or models."
        )


def model_nfe(card) -> int:
    """Network evaluations per sampling step: 1 for a w-conditioned student, 2 (conditional + unconditional) otherwise."""
    return 1 if getattr(card, "w_conditioned", False) else 2


# ---- what a user sees: no absolute server paths ----

_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"`,;:()\[\]{}<>]+/)*([^\s'\"`,;:()\[\]{}<>/]*)")


def public_text(text: str, roots=(), repo: str | os.PathLike | None = None) -> str:
    """`text` with server paths shortened: inside a root → `rootname/rel`, inside the repo → relative, others → name.

    Worker command lines (`$ python -m …`) are dropped: they hold every absolute path of the job.
    """
    text = "\n".join(line for line in str(text).splitlines() if not line.startswith("$ "))
    repo = Path(repo) if repo is not None else REPO_ROOT
    labels = []
    for r in roots:
        r = Path(r)
        try:
            label = r.resolve().relative_to(repo.resolve()).as_posix()
        except ValueError:
            label = r.name
        labels += [(str(r), label), (str(r.resolve()), label)]
    labels += [(str(repo.resolve()), ""), (str(repo), ""), (tempfile.gettempdir(), "tmp")]
    for absolute, label in sorted(set(labels), key=lambda x: -len(x[0])):
        if absolute and absolute != "/":
            text = re.sub(re.escape(absolute) + r"/", f"{label}/" if label else "", text)
            text = re.sub(re.escape(absolute) + r"(?![\w.-])", label or ".", text)
    return _ABS_PATH.sub(lambda m: m.group(1) or "…", text)
