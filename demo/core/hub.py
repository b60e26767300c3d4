"""Model folders on the Hugging Face Hub: fetched at a pinned revision, JSON and safetensors files only, never any
remote code; students pushed back with `huggingface_hub` under a `ModelCard` (license inherited from the teacher,
base model, dataset, metrics, the command that made it). Every failure a user can cause is one sentence.

A Hub model is named `owner/name@revision` (or `hf://owner/name@revision`). The revision should be a commit hash:
a branch or tag can move under a paper's numbers, so those are accepted with a warning, and a missing revision is
refused. The download holds only `*.json` and `*.safetensors` files (a text model's `tokenizer/merges.txt`, and the
README model card), so a repository's pickles or Python files never reach the disk, and `demo.core.models` builds only the classes registered there.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

from demo.core.card import CARD_FILE, read_card, teacher_folder, write_card

# JSON, safetensors and a CLIP tokenizer's BPE merges (plain text) for text-conditional models (demo.core.text)
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer/merges.txt"]
FETCH_PATTERNS = [*ALLOW_PATTERNS, "README.md"]  # the model card too (plain text): a student inherits its teacher's license
HUB_PREFIX = "hf://"
_SPEC = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
ETAG_TIMEOUT_S = 10.0  # per request; huggingface_hub's own default, written down so a dead network fails, not hangs


class HubError(ValueError):
    """A Hub model that cannot be fetched or pushed; the message is one sentence for the user."""


def parse_hub_spec(text: str) -> tuple[str, str | None] | None:
    """`owner/name@rev` or `hf://owner/name[@rev]` → (repo_id, revision); None when `text` is not a Hub name.

    A bare `owner/name` is a relative path, not a Hub name (so a mistyped `runs/x` never goes to the network).
    """
    text = str(text).strip()
    explicit = text.startswith(HUB_PREFIX)
    m = _SPEC.match(text[len(HUB_PREFIX) :] if explicit else text)
    if m is None or not (explicit or m.group("rev")):
        return None
    return m.group("repo"), m.group("rev")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def fetch_model_folder(spec: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Download (or reuse from the cache) a Hub model folder at a pinned revision; returns the local folder."""
    parsed = parse_hub_spec(spec)
    if parsed is None:
        raise HubError(f"{spec!r} is not a Hub model name; write owner/name@revision.")
    repo_id, revision = parsed
    if revision is None:
        raise HubError(f"Pin a revision for {repo_id}: write {repo_id}@<commit hash> (a branch can change under your results).")
    if not _COMMIT.match(revision):
        warnings.warn(
            f"{repo_id}@{revision} is a branch or tag, not a commit hash; pin the commit to make results reproducible.",
            stacklevel=2,
        )
    from huggingface_hub import errors, snapshot_download

    where = f"{repo_id}@{revision}"
    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=FETCH_PATTERNS,
            cache_dir=str(cache_dir) if cache_dir else None,
            etag_timeout=ETAG_TIMEOUT_S,
        )
    except errors.RevisionNotFoundError:
        raise HubError(f"Revision {revision!r} does not exist in {repo_id} on the Hugging Face Hub.") from None
    except (errors.RepositoryNotFoundError, errors.GatedRepoError):
        raise HubError(
            f"{repo_id} is not a model repository you can read on the Hugging Face Hub (check the name, or log in for a private one)."
        ) from None
    except errors.LocalEntryNotFoundError:  # offline, a dead network or a timeout, and not in the local cache
        why = "HF_HUB_OFFLINE is set" if _offline() else "the Hugging Face Hub cannot be reached"
        raise HubError(f"Cannot fetch {where}: {why} and it is not in the local cache.") from None
    except (OSError, errors.HfHubHTTPError) as e:  # connection resets, HTTP errors, a full disk
        raise HubError(f"Cannot fetch {where} from the Hugging Face Hub ({type(e).__name__}).") from None
    return Path(path)


def resolve_model_source(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local folder as it is; a Hub name (`owner/name@revision`) fetched to the Hub cache."""
    if not isinstance(source, str) or Path(source).exists() or parse_hub_spec(source) is None:
        return Path(source)
    return fetch_model_folder(source, cache_dir)


DEFAULT_LICENSE = "mit"  # this code and Fashion-MNIST (Xiao et al. 2017) are MIT; the lab's own teachers carry it
DEFAULT_DATASET = "zalando-datasets/fashion_mnist"
# card.json metric → (Hub metric id, what it measures here): the Fréchet distance is in the project's Fashion-MNIST
# classifier features (analysis.evaluate), not Inception's, so its name says so.
CARD_METRICS = {
    "frechet_distance": ("fid", "Fréchet distance (Fashion-MNIST classifier features)"),
    "accuracy": ("accuracy", "class accuracy of conditional samples"),
    "precision": ("precision", "precision"),
    "recall": ("recall", "recall"),
}
_CACHE_REPO = re.compile(r"models--(?P<owner>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<rev>[0-9a-f]{40})")


def hub_name_of(folder: str | os.PathLike) -> str | None:
    """`owner/name` of a folder fetched from the Hub (its cache path says so) or pushed by `push_model_folder`."""
    m = _CACHE_REPO.search(Path(folder).resolve().as_posix())
    if m:
        return f"{m.group('owner')}/{m.group('name')}"
    pushed = parse_hub_spec(str(read_card(folder).get("hub", "")))
    return pushed[0] if pushed else None


def model_license(folder: str | os.PathLike) -> str:
    """A model's license: its card's, else its teacher's (card or Hub README), so a student keeps the terms of a
    non-commercial teacher; the lab's own teachers are MIT."""
    folder = Path(folder)
    own = read_card(folder).get("license")
    if own:
        return str(own)
    if (folder / "README.md").is_file() and folder.resolve().as_posix().find("/snapshots/") >= 0:
        from huggingface_hub import ModelCard

        found = ModelCard.load(folder / "README.md").data.license
        if found:
            return str(found)
    teacher = teacher_folder(folder)
    if teacher is not None:
        return model_license(teacher)
    if read_card(folder).get("teacher"):
        warnings.warn(
            f"The teacher of {folder} was not found, so its license is unknown; assuming {DEFAULT_LICENSE}.", stacklevel=2
        )
    return DEFAULT_LICENSE


def _command() -> str | None:
    """The command line of this process when it is the distillation CLI (the command that made the model)."""
    import shlex
    import sys

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (
        f"python -m demo.distill {shlex.join(sys.argv[1:])}"
        if spec is not None and spec.name == "demo.distill.__main__"
        else None
    )


def model_card(folder: str | os.PathLike, repo_id: str | None = None, base_model: str | None = None, command: str | None = None):
    """A `huggingface_hub.ModelCard` for a model folder: license (inherited from the teacher), base model (the
    teacher on the Hub), dataset, method, metrics as model-index results, and the command that made it."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    folder = Path(folder)
    card = read_card(folder)
    name = card.get("name") or folder.name
    teacher = teacher_folder(folder)
    base_model = base_model or card.get("base_model") or (hub_name_of(teacher) if teacher is not None else None)
    if base_model is None and card.get("teacher") and parse_hub_spec(str(card["teacher"])):
        base_model = parse_hub_spec(str(card["teacher"]))[0]
    dataset = card.get("dataset") or DEFAULT_DATASET
    results = []
    for setting, row in sorted((card.get("metrics") or {}).items()):
        for key, (metric_type, what) in CARD_METRICS.items():
            if isinstance(row, dict) and isinstance(row.get(key), int | float):
                results.append(
                    EvalResult(
                        task_type="image-generation",
                        task_name="Class-conditional image generation",
                        dataset_type=dataset,
                        dataset_name="Fashion-MNIST" if dataset == DEFAULT_DATASET else dataset,
                        dataset_split="test",
                        metric_type=metric_type,
                        metric_name=f"{what}, {setting}",
                        metric_value=round(float(row[key]), 4),
                        metric_config=setting,
                    )
                )
    data = ModelCardData(
        license=model_license(folder),
        library_name="diffusers",
        base_model=base_model,
        datasets=[dataset],
        metrics=sorted({r.metric_type for r in results}) or None,
        model_name=name,
        eval_results=results or None,
        tags=[
            "guided-distillation-lab",
            "class-conditional",
            "classifier-free-guidance",
            str(card.get("method") or "diffusion").split(" ")[0],
        ],
    )
    command = command or (card.get("training") or {}).get("command") or _command()
    repo = repo_id or "OWNER/NAME"
    body = [
        f"# {name}",
        "",
        card.get("description") or f"A {card.get('kind', 'model')} ({card.get('method', '')}) from the Guided Distillation Lab.",
        "",
        f"- Method: {card.get('method') or '—'}; kind: {card.get('kind') or '—'}; teacher: {card.get('teacher') or '—'}"
        + (f" (`{base_model}`)" if base_model else ""),
        f"- Classes: {card.get('num_classes')} (null class {card.get('null_class')}); distilled steps: {card.get('steps') or 'any'}; "
        f"w-conditioned: {bool(card.get('w_conditioned'))}; guidance W in the diffusers convention (`eps_u + W*(eps_c - eps_u)`).",
        f"- Dataset: `{dataset}`; parameters: {card.get('parameters') or '—'}.",
        "",
        "## Use",
        "",
        "```python",
        "import demo.pipeline  # noqa: F401  (the Guided Distillation Lab; makes GuidedPipeline known to diffusers)",
        "from diffusers import DiffusionPipeline",
        "",
        f'pipe = DiffusionPipeline.from_pretrained("{repo}", revision="<commit>")',
        f'images = pipe(class_labels="all", num_images_per_prompt=10, guidance_scale={(card.get("guidance") or {}).get("default", 2.0)}, '
        f"num_inference_steps={card.get('steps') or 64}).images",
        "```",
        "",
        f"Or from the lab: `python -m demo.sample --model {repo}@<commit> --n 16 --steps {card.get('steps') or 64} --guidance 2 --out grid.png`.",
        "",
    ]
    if command:
        body += ["## How it was made", "", "```bash", command, "```", ""]
    if card.get("training"):
        body += ["Training settings (`card.json`):", "", "```json", json.dumps(card["training"], indent=2), "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def check_repo_id(repo_id: str) -> str:
    """`owner/name` for pushing (no revision); HubError otherwise."""
    if _SPEC.match(str(repo_id)) is None or "@" in str(repo_id):
        raise HubError(f"--push-to-hub needs a repository id like owner/name, got {repo_id!r}.")
    return str(repo_id)


def push_model_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    base_model: str | None = None,
    command: str | None = None,
) -> str:
    """Upload a model folder's JSON and safetensors files (plus its model card as README.md) to `repo_id`; returns
    `repo_id@commit`, which is also recorded as `hub` in the local card.json so its students name it as base model."""
    from huggingface_hub import HfApi, errors

    folder = Path(folder)
    check_repo_id(repo_id)
    if _offline():
        raise HubError(f"Cannot push to {repo_id}: HF_HUB_OFFLINE is set.")
    card = read_card(folder)
    model_card(folder, repo_id=repo_id, base_model=base_model, command=command).save(folder / "README.md")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            allow_patterns=[*ALLOW_PATTERNS, "README.md"],
            commit_message=f"Upload {card.get('name', folder.name)}",
        )
    except (OSError, errors.HfHubHTTPError) as e:
        raise HubError(f"Cannot push {folder} to {repo_id} on the Hugging Face Hub ({type(e).__name__}).") from None
    if (folder / CARD_FILE).is_file():
        write_card(folder, {**card, "hub": f"{repo_id}@{info.oid}"})
    return f"{repo_id}@{info.oid}"
