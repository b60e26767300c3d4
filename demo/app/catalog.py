"""The model catalog: which model folders exist under the allowed roots, and loading them safely and cheaply.

Only folders inside the allowed roots are ever listed, read or loaded: `resolve()` rejects `..`, absolute paths
elsewhere and symlinks that lead out of a root. Roots: `assets/models`, the runs folder (`GDL_RUNS_DIR`, default
`runs/`; a finished run keeps its model in `runs/<run>/model/`), and any extra roots in `GDL_MODEL_ROOTS`
(separated by the OS path separator). Listing reads only JSON; torch and diffusers load on the first `load()`.
A model folder is a pixel UNet (`unet/`) or a latent DiT (`transformer/` + `vae/`), see `demo.core.layout`. With the Hub
allowed (`GDL_ALLOW_HUB=1`), `owner/name@revision` is fetched into a hub root (`demo.core.hub`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from demo.core.card import Card, Entry, read_card, teacher_folder
from demo.core.hub import parse_hub_spec
from demo.core.layout import WEIGHTS_NAME, denoiser_dir, is_model_folder
from demo.core.paths import DEFAULT_HUB_DIR, MODELS_DIR, runs_dir
from demo.core.stats import STATS_FILE, read_stats
from demo.core.validate import model_text, show

ROOTS_ENV, HUB_ENV, HUB_DIR_ENV = "GDL_MODEL_ROOTS", "GDL_ALLOW_HUB", "GDL_HUB_DIR"
PRECISIONS = ("fp32", "bf16")  # bf16: the networks run under bfloat16 autocast (the samplers stay float32)
MAX_DEPTH = 3  # root/<name>/ and root/<run>/model/ (and one level more for grouped runs)


def default_roots() -> list[Path]:
    roots = [MODELS_DIR, runs_dir()]
    roots += [Path(p) for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return roots


def _listed_name(card_name, folder_name: str) -> str:
    """The card's name when a request could name it back (`model_text`), else the folder's: a 300-character or
    non-string card name would list a model that every request then refuses."""
    if isinstance(card_name, str) and card_name.strip() == card_name:
        try:
            return model_text(card_name)
        except ValueError:
            pass
    return folder_name


def _warm_up(model) -> None:
    """One tiny forward pass, so the first timed sampling run does not pay one-off setup costs (a fair latency)."""
    import torch

    model = model.with_prompts([""]) if model.is_text else model  # a text model: the empty prompt (encoder included)
    c = model.card
    z = torch.zeros(1, *model.sample_shape, device=model.device)
    t = torch.full((1,), model.schedule.num_train_timesteps - 1, device=model.device)
    w = torch.ones(1, device=model.device) if c.w_conditioned else None
    with torch.no_grad():
        model.output(z, t, torch.full((1,), c.null_class, device=model.device), w)


class Catalog:
    """Discovers model folders under allowed roots, resolves names or paths, and keeps a small LRU of loaded models."""

    def __init__(
        self,
        roots=None,
        device: str | None = None,
        cache_size: int = 4,
        allow_hub: bool | None = None,
        hub_dir: str | os.PathLike | None = None,
        precision: str = "fp32",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        roots = default_roots() if roots is None else [Path(r) for r in roots]
        self.allow_hub = os.environ.get(HUB_ENV, "") == "1" if allow_hub is None else allow_hub
        self.hub_dir = Path(hub_dir or os.environ.get(HUB_DIR_ENV) or DEFAULT_HUB_DIR)
        if self.allow_hub:
            roots.append(self.hub_dir)
        self.roots = list(dict.fromkeys(Path(os.path.abspath(r)).resolve() for r in roots))
        self._device = device
        self.cache_size = max(1, int(cache_size))
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        if self._device is None:
            from demo.core.validate import default_device

            self._device = default_device()
        return self._device

    # ---- discovery (JSON only) ----
    def entries(self) -> list[Entry]:
        """Every model folder under the roots, first root first; names are unique (later duplicates get a path)."""
        found: dict[str, Entry] = {}
        for root in self.roots:
            for folder in self._walk(root):
                card = read_card(folder)
                rel = folder.relative_to(root).as_posix()
                name = _listed_name(card.get("name"), folder.parent.name if folder.name == "model" else folder.name)
                if name in found:
                    name = f"{root.name}/{rel}"
                found[name] = Entry.of(name, folder, card)
        return list(found.values())

    def _walk(self, folder: Path, depth: int = 0):
        """Model folders below `folder` in sorted order, not descending into model folders or hidden ones."""
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir())
        except OSError:
            return
        for child in children:
            if not self._inside_roots(child.resolve()):
                continue  # a symlink out of the roots is never listed
            if is_model_folder(child):
                yield child
            elif depth + 1 < MAX_DEPTH and not child.name.startswith((".", "checkpoint-")):
                yield from self._walk(child, depth + 1)

    def names(self, kind: str | None = None) -> list[str]:
        return [e.name for e in self.entries() if kind is None or e.kind == kind]

    def entry(self, name_or_path: str) -> Entry:
        path = self.resolve(name_or_path)
        for e in self.entries():
            if e.path.resolve() == path:
                return e
        return Entry.of(str(name_or_path), path, read_card(path))

    # ---- resolution: names, or paths inside the roots ----
    def _inside_roots(self, resolved: Path) -> bool:
        return any(resolved == r or resolved.is_relative_to(r) for r in self.roots)

    def resolve(self, name_or_path) -> Path:
        """A catalog name or a path inside an allowed root → the folder's resolved path; ValueError otherwise."""
        text = model_text(name_or_path)  # a string without NUL or over-long names: OSError never reaches the user
        for e in self.entries():
            if e.name == text:
                return e.path.resolve()
        p = Path(text)  # no `~`: a home folder is not a model root
        if ".." in p.parts:
            raise ValueError(f"Model path {show(text)} may not contain '..'.")
        candidates = [p] if p.is_absolute() else [r / p for r in self.roots]
        for c in candidates:
            try:
                exists = c.exists()
                resolved = c.resolve() if exists else c
            except (OSError, RuntimeError):  # a symlink loop, or a name the filesystem refuses
                raise ValueError(f"Model path {show(text)} cannot be read.") from None
            if exists:
                if not self._inside_roots(resolved):
                    raise ValueError(f"Model path {show(text)} is outside the allowed model folders.")
                if not is_model_folder(resolved):
                    raise ValueError(
                        f"{show(text)} is not a model folder (it has no unet/config.json or transformer/config.json)."
                    )
                return resolved
        if p.is_absolute():
            raise ValueError(f"Model path {show(text)} is outside the allowed model folders or does not exist.")
        if self.allow_hub and parse_hub_spec(text) is not None:
            return self._from_hub(text)
        known = ", ".join(self.names()) or "none found"
        raise ValueError(f"Unknown model {show(text)} (available: {known}).")

    def _from_hub(self, spec: str) -> Path:
        """Fetch a Hub model folder (`owner/name@revision`; JSON and safetensors only) into the hub root."""
        from demo.core.hub import fetch_model_folder

        path = fetch_model_folder(spec, cache_dir=self.hub_dir).resolve()  # HubError (a ValueError): one sentence
        if not self._inside_roots(path):
            raise ValueError(f"Model path {spec!r} is outside the allowed model folders.")
        if not is_model_folder(path):
            raise ValueError(f"{spec!r} is not a model folder (it has no unet/config.json or transformer/config.json).")
        return path

    def _check_files(self, folder: Path) -> None:
        """Every file the loader may read must stay inside the roots (no symlinked weights from elsewhere)."""
        for dirpath, dirs, files in os.walk(folder):  # symlinked folders are not walked, so check them as entries too
            for f in [*dirs, *files]:
                if not self._inside_roots((Path(dirpath) / f).resolve()):
                    raise ValueError(f"Model folder {folder.name!r} links to a file outside the allowed model folders.")

    def open_folder(self, name_or_path) -> Path:
        """The one model-folder check every path that opens a folder uses (sampling, trajectories, branch gap, jobs,
        the worker): inside the roots, no file linked from elsewhere, a valid layout, card, scheduler and TIRT file."""
        from demo.core.models import check_model_folder

        folder = self.resolve(name_or_path)
        self._check_files(folder)
        return check_model_folder(folder)

    # ---- loading (torch/diffusers imported here, not at import time) ----
    def load(self, name_or_path):
        """The loaded model (LRU-cached by folder and weights' modification time); ValueError / ModelFolderError."""
        from demo.core.models import load_model_folder

        folder = self.open_folder(name_or_path)
        weights = (denoiser_dir(folder) or folder / "unet") / WEIGHTS_NAME
        key = (folder, weights.stat().st_mtime_ns if weights.is_file() else 0, self.device)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        entry_name = next((e.name for e in self.entries() if e.path.resolve() == folder), None)
        model = load_model_folder(folder, device=self.device, name=entry_name)
        if self.precision == "bf16":
            import torch

            model.autocast_dtype = torch.bfloat16
        _warm_up(model)
        with self._lock:
            self._cache[key] = model
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return model

    def card(self, name_or_path) -> Card:
        """The `demo.core.card.Card` of a folder, read without loading weights."""
        e = self.entry(name_or_path)
        return Card.from_dict({**e.card, "name": e.name})

    def cards(self) -> list[Card]:
        return [Card.from_dict({**e.card, "name": e.name}) for e in self.entries()]

    def teacher_of(self, name_or_path) -> str | None:
        """The catalog name of the teacher a model's card names (`demo.core.card.teacher_folder`), or None when the card
        names none, or names one that is not in the catalog."""
        try:
            folder = self.resolve(name_or_path)
        except ValueError:
            return None
        entries = self.entries()
        found = teacher_folder(folder, known={e.name: e.path for e in entries})
        if found is None:
            return None
        found = found.resolve()
        return next((e.name for e in entries if e.path.resolve() == found), None)

    def runs(self) -> dict[str, Path]:
        """Training runs with a `stats.jsonl` under the roots (finished or still running), name → log path."""
        out = {}
        for root in self.roots:
            if not root.is_dir():
                continue
            for log in sorted(root.glob(f"*/{STATS_FILE}")) + sorted(root.glob(f"*/*/{STATS_FILE}")):
                if self._inside_roots(log.resolve()):
                    out.setdefault(log.parent.relative_to(root).as_posix(), log)
        return out

    def stats_rows(self, run: str) -> list[dict]:
        """Rows of a run's `stats.jsonl`; ValueError for a run that is not under the roots."""
        path = self.runs().get(str(run))
        if path is None:
            raise ValueError(f"Unknown training run {run!r} (available: {', '.join(self.runs()) or 'none found'}).")
        return read_stats(path)  # a line being written right now is skipped
