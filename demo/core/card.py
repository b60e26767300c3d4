"""The model card `card.json` of a model folder, read and written only here, and the one rule for a student's teacher.

The card says what the app and the scripts need to know about a model without loading it (kind, method, classes,
guidance range, distilled step count, measured metrics; see `Card`). Reading it imports no torch, so the catalog lists
models from JSON alone. See ARCHITECTURE.md for the other on-disk formats.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from demo.core.layout import is_model_folder
from demo.core.paths import MODELS_DIR
from demo.core.run_folder import run_of_model

CARD_FILE = "card.json"


def _fashion_mnist_names() -> list[str]:
    from demo.core.data import CLASS_NAMES  # imported on use: demo.core.data imports torch, the card module does not

    return list(CLASS_NAMES)


@dataclass
class Card:
    """What the app and the scripts need to know about a model folder (`card.json`)."""

    name: str
    kind: str = "teacher"  # teacher | student
    method: str = "diffusion"
    teacher: str | None = None
    num_classes: int = 10
    class_names: list[str] = field(default_factory=_fashion_mnist_names)
    null_class: int = 10
    image_size: int = 28  # of the (decoded) images
    channels: int = 1
    space: str = "pixel"  # pixel | latent (the denoiser works on VAE latents; images are decoded for display)
    conditioning: str = "class"  # class | text (prompts and a negative prompt: demo.core.text)
    guidance: dict = field(
        default_factory=lambda: {"convention": "diffusers: eps_u + W*(eps_c - eps_u)", "default": 2.0, "min": 0.0, "max": 8.0}
    )
    steps: int | None = None  # the step count a student was distilled for (None: any)
    w_conditioned: bool = False
    parameters: int = 0
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    description: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> Card:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def read_card(folder: str | os.PathLike, strict: bool = False) -> dict:
    """The card of a model folder as a dict; {} when the folder has none.

    Not strict (listing, defaults): an unreadable file or one that is not a JSON object is also {}. Strict (loading,
    editing): OSError or ValueError, so a broken card is reported rather than silently replaced.
    """
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return {}
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        if strict:
            raise
        return {}
    if not isinstance(d, dict):
        if strict:
            raise ValueError(f"{path} must hold a JSON object, got a {type(d).__name__}")
        return {}
    return d


def write_card(folder: str | os.PathLike, card: Card | dict) -> Path:
    """Write `card.json` (indented, one trailing newline) through a temporary file, so a reader never sees half."""
    d = dict(card.__dict__) if isinstance(card, Card) else dict(card)
    path = Path(folder) / CARD_FILE
    tmp = path.with_name(f".{CARD_FILE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(d, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def teacher_folder(folder: str | os.PathLike, known: Mapping[str, os.PathLike] | None = None) -> Path | None:
    """The model folder a student was distilled from: the one rule every reader of "the student's teacher" uses.

    The card's `teacher` (a model name, or a path) is looked up as, first match that is a model folder wins:
    1. the teacher path the student's training run recorded (`<run>/config.json`, for a run's `model/` folder),
    2. the name as a path,
    3. a name in `known` (the catalog passes its names, so a teacher in any model root is found),
    4. a folder of that name beside the student,
    5. a shipped model of that name (`assets/models/`).
    None when the card names no teacher (a teacher, or a folder without a card) or none of these is a model folder.
    """
    folder = Path(folder)
    name = read_card(folder).get("teacher")
    if not isinstance(name, str) or not name:
        return None
    run = run_of_model(folder)
    candidates = [Path(run.recorded_teacher())] if run is not None and run.recorded_teacher() else []
    candidates.append(Path(name))
    if known and name in known:
        candidates.append(Path(known[name]))
    candidates += [folder.parent / name, MODELS_DIR / name]
    return next((c for c in candidates if is_model_folder(c)), None)


def generator_init(card: dict) -> str | None:
    """The model a refined student's generator started from (HD and DMD record it as `training.generator_init`): the
    sketch it refines, or the teacher for DMD-only; None when the card names none."""
    name = ((card.get("training") or {}).get("generator_init") or {}).get("name")
    return name if isinstance(name, str) and name else None


def named_teacher(folders, fallback: str | os.PathLike = "assets/models/fmnist-teacher") -> Path:
    """The one teacher the model folders' cards name (found by `demo.core.card.teacher_folder`), so a report measures
    students against the model they were distilled from; `fallback` when no card names one."""
    named = {}
    for folder in folders:
        name = read_card(folder).get("teacher")
        if isinstance(name, str) and name:
            named.setdefault(name, (Path(folder), teacher_folder(folder)))
    if not named:
        return Path(fallback)
    if len(named) > 1:
        raise ValueError(f"the students' cards name different teachers ({', '.join(sorted(named))}); choose one with --teacher.")
    ((name, (folder, path)),) = named.items()
    if path is None:
        raise ValueError(
            f"the students' cards name the teacher {name!r}, but {folder.parent / name} is not a model folder; choose one with --teacher."
        )
    return path


@dataclass(frozen=True)
class Entry:
    """A model folder described from its card.json alone (no weights read): what the catalog lists and the benchmark
    measures."""

    name: str
    path: Path
    kind: str
    method: str
    steps: int | None
    w_conditioned: bool
    card: dict

    @classmethod
    def of(cls, name: str, folder: Path, card: dict) -> Entry:
        kind, method = str(card.get("kind", "teacher")), str(card.get("method", ""))
        return cls(name, Path(folder), kind, method, card.get("steps"), bool(card.get("w_conditioned", False)), card)
