"""`python -m demo.space --models A,B --out DIR`: a deployable Hugging Face Space that hosts only the chosen models
(ARCHITECTURE.md), not the whole repository.

The folder holds the app (`app.py`, the `demo` and `analysis` packages, Python files only), the feature classifier
the Metrics tab reads, the chosen model folders under `assets/models/` (or, for a Hub name `owner/name@commit`, a
line in `hub_models.txt` that the app fetches at start), `requirements.txt` (runtime only, pinned to the tested
versions of `constraints.txt`, torch from the PyTorch CPU index so a CPU Space does not install CUDA), `packages.txt`,
`LICENSE`, `.gitattributes` (Git LFS for the weights, for a `git push`) and a README whose front matter is the
Spaces configuration (sdk, sdk_version, python_version, app_file, license, models). Upload it with
`hf upload --repo-type space OWNER/NAME DIR` or `git push` it to a new Space.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from demo.core.card import read_card
from demo.core.hub import DEFAULT_DATASET, model_license, parse_hub_spec
from demo.core.layout import is_model_folder
from demo.core.paths import MODELS_DIR, REPO_ROOT

REPO = REPO_ROOT
CODE_PACKAGES = ("demo", "analysis")
COPIED_FILES = ("app.py", "packages.txt", "LICENSE")
CLASSIFIER = Path("assets") / "classifier"
HUB_MODELS_FILE = "hub_models.txt"  # pinned Hub names, one a line; app.py fetches them at start
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"  # CPU-only torch wheels: no nvidia-* packages on a CPU Space
PYTHON_VERSION = "3.11"  # the tested interpreter (constraints.txt)
SIZE_WARN_BYTES = 1 << 30  # Spaces repositories well past a GiB are slow to build and clone
LFS_RULES = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n*.npz filter=lfs diff=lfs merge=lfs -text\n"
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements(cpu: bool = True, repo: Path = REPO) -> str:
    """The repository's runtime requirements pinned to the tested versions (constraints.txt); torch from the CPU index."""
    tested = {}
    for line in (repo / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            tested[_norm(name)] = version
    lines = ["# Written by python -m demo.space: the runtime set, pinned to the versions the tests passed with."]
    if cpu:
        lines.append(f"--extra-index-url {TORCH_CPU_INDEX}")
    for line in (repo / "requirements.txt").read_text().splitlines():
        m = _REQ_NAME.match(line.split("#")[0])
        if m:
            name = m.group(1)
            lines.append(f"{name}=={tested[_norm(name)]}" if _norm(name) in tested else line.split("#")[0].strip())
    return "\n".join(lines) + "\n"


def resolve_model(spec: str, models_dir: Path = MODELS_DIR) -> tuple[str, Path | None, str | None]:
    """(name, local folder or None, Hub name or None) for a shipped model name, a model folder path, or `owner/name@commit`."""
    spec = spec.strip()
    for candidate in (models_dir / spec, Path(spec).expanduser()):
        if is_model_folder(candidate):
            card = read_card(candidate, strict=True)
            return str(card.get("name") or candidate.name), candidate, None
    parsed = parse_hub_spec(spec)
    if parsed is not None:
        if parsed[1] is None:
            raise ValueError(f"pin a revision for {parsed[0]}: write {parsed[0]}@<commit hash>")
        return parsed[0].split("/")[1], None, spec
    raise ValueError(f"{spec!r} is neither a model under {models_dir}, a model folder, nor a Hub name owner/name@commit")


def front_matter(names: list[str], hub: list[str], license_: str) -> str:
    from importlib.metadata import version  # gradio's version without importing gradio (the core never does)

    title = " vs ".join(names) if len(" vs ".join(names)) <= 30 else "Guided Distillation Lab"
    fields = [
        f"title: {json.dumps(title)}",
        "emoji: 🧪",
        "colorFrom: indigo",
        "colorTo: gray",
        "sdk: gradio",
        f"sdk_version: {version('gradio')}",
        f'python_version: "{PYTHON_VERSION}"',
        "app_file: app.py",
        "pinned: false",
        f"license: {license_}",
        f"short_description: {json.dumps(('Compare ' + ' and '.join(names))[:60])}",
        f"datasets: [{DEFAULT_DATASET}]",
        "tags: [guided-distillation-lab, diffusion, classifier-free-guidance, distillation]",
    ]
    if hub:
        fields.append("models: [" + ", ".join(parse_hub_spec(h)[0] for h in hub) + "]")
    return "---\n" + "\n".join(fields) + "\n---\n"


def write_space(models: list[str], out: str | Path, cpu: bool = True, overwrite: bool = False, repo: Path = REPO) -> dict:
    """Write the Space folder; returns a summary (models, files, bytes)."""
    out = Path(out)
    if not models:
        raise ValueError("choose at least one model with --models A,B")
    resolved = [resolve_model(m, repo / "assets" / "models") for m in models]
    names = [n for n, _, _ in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"two models share a name: {', '.join(names)}")
    if out.exists():
        if not overwrite and any(out.iterdir()):
            raise ValueError(f"{out} exists and is not empty (pass --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in CODE_PACKAGES:
        shutil.copytree(
            repo / package,
            out / package,
            ignore=lambda d, files: [*ignore(d, files), *(f for f in files if (Path(d) / f).is_file() and not f.endswith(".py"))],
        )
    for name in COPIED_FILES:
        if (repo / name).is_file():
            shutil.copy2(repo / name, out / name)
    if (repo / CLASSIFIER).is_dir():
        shutil.copytree(repo / CLASSIFIER, out / CLASSIFIER)
    licenses, hub = set(), []
    from demo.core.models import write_model_index

    for name, folder, spec in resolved:
        if folder is None:
            hub.append(spec)
            continue
        dest = out / "assets" / "models" / name
        shutil.copytree(folder, dest, ignore=ignore)
        if not (dest / "model_index.json").is_file():
            write_model_index(dest)
        licenses.add(model_license(folder))
    if hub:
        (out / HUB_MODELS_FILE).write_text("\n".join(hub) + "\n")
    license_ = licenses.pop() if len(licenses) == 1 else ("mit" if not licenses else "other")
    (out / "requirements.txt").write_text(pinned_requirements(cpu, repo))
    (out / ".gitattributes").write_text(LFS_RULES)
    listing = "\n".join(f"- `{n}`" + (f" (from the Hub: `{s}`)" if s else "") for n, _, s in resolved)
    (out / "README.md").write_text(
        front_matter(names, hub, license_)
        + f"\n# {' vs '.join(names)}\n\nA Guided Distillation Lab Space for these models only:\n\n{listing}\n\n"
        "Compare them side by side from the same noise (`/compare`), follow their trajectories, guidance branches, grids and "
        "metrics. The Distill tab is read-only on a shared Space: duplicate it (and set `GDL_ALLOW_TRAINING=1` in its "
        "settings) to train students of your own.\n\nRun it locally: `pip install -r requirements.txt && python app.py`.\n"
    )
    files = [p for p in out.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    if total > SIZE_WARN_BYTES:
        print(f"warning: {out} holds {total / 1e6:.0f} MB", file=sys.stderr)
    return {
        "out": str(out),
        "models": names,
        "hub_models": hub,
        "files": len(files),
        "megabytes": round(total / 1e6, 2),
        "license": license_,
    }


# ---- at the Space's start (app.py) ----


def fetch_hub_models(folder: str | Path = REPO, cache_dir: str | Path | None = None) -> list[Path]:
    """Fetch the pinned Hub models `hub_models.txt` names (JSON and safetensors only, `demo.core.hub`) and add their
    folders to the catalog's roots (`GDL_MODEL_ROOTS`); returns the fetched folders."""
    import os

    from demo.core.hub import fetch_model_folder

    listing = Path(folder) / HUB_MODELS_FILE
    specs = (
        [s.strip() for s in listing.read_text().splitlines() if s.strip() and not s.startswith("#")] if listing.is_file() else []
    )
    fetched = [fetch_model_folder(s, cache_dir=cache_dir or Path(folder) / "hub-models") for s in specs]
    roots = [r for r in os.environ.get("GDL_MODEL_ROOTS", "").split(os.pathsep) if r]
    roots += [str(f.parent) for f in fetched if str(f.parent) not in roots]  # the catalog lists model folders *below* a root
    if roots:
        os.environ["GDL_MODEL_ROOTS"] = os.pathsep.join(roots)
    return fetched


def on_zero_gpu() -> bool:
    import os

    return bool(os.environ.get("SPACES_ZERO_GPU"))


def place_models(catalog) -> list[str]:
    """On ZeroGPU, load every model at start, outside the `@spaces.GPU` handlers, as its guidance says: `spaces`
    defers the move to CUDA until a handler holds a GPU, so handlers find the models placed instead of loading
    them inside their GPU time. The cache keeps them all. Returns the loaded names."""
    names = catalog.names()
    catalog.cache_size = max(catalog.cache_size, len(names))
    for name in names:
        catalog.load(name)
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.space", description=__doc__.splitlines()[0].strip("`"))
    p.add_argument(
        "--models", required=True, help="comma-separated: shipped model names, model folder paths or Hub names owner/name@commit"
    )
    p.add_argument("--out", required=True, help="the Space folder to write")
    p.add_argument("--gpu", action="store_true", help="take torch from the default index (a GPU Space) instead of the CPU index")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    args = p.parse_args(argv)
    try:
        summary = write_space(
            [m for m in args.models.split(",") if m.strip()], args.out, cpu=not args.gpu, overwrite=args.overwrite
        )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
