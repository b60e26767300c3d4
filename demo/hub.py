"""Model folders on the Hugging Face Hub: fetched at a pinned revision, JSON and safetensors files only, never any
remote code; students pushed back with `huggingface_hub`. Every failure a user can cause is one sentence.

A Hub model is named `owner/name@revision` (or `hf://owner/name@revision`). The revision should be a commit hash:
a branch or tag can move under a paper's numbers, so those are accepted with a warning, and a missing revision is
refused. The download holds only `*.json` and `*.safetensors` files, so a repository's pickles or Python files never
reach the disk, and `demo.models` builds only the classes registered there.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

ALLOW_PATTERNS = ["*.json", "*.safetensors"]
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
        warnings.warn(f"{repo_id}@{revision} is a branch or tag, not a commit hash; pin the commit to make results reproducible.", stacklevel=2)
    from huggingface_hub import errors, snapshot_download

    where = f"{repo_id}@{revision}"
    try:
        path = snapshot_download(
            repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS, cache_dir=str(cache_dir) if cache_dir else None, etag_timeout=ETAG_TIMEOUT_S
        )
    except errors.RevisionNotFoundError:
        raise HubError(f"Revision {revision!r} does not exist in {repo_id} on the Hugging Face Hub.") from None
    except (errors.RepositoryNotFoundError, errors.GatedRepoError):
        raise HubError(f"{repo_id} is not a model repository you can read on the Hugging Face Hub (check the name, or log in for a private one).") from None
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


def model_card_text(card: dict) -> str:
    """A README.md for the pushed repository: Hub metadata and how to run the model in this app."""
    lines = [
        "---",
        "library_name: diffusers",
        "tags: [guided-distillation-lab, class-conditional, classifier-free-guidance]",
        "---",
        "",
        f"# {card.get('name', 'model')}",
        "",
        card.get("description") or f"A {card.get('kind', 'model')} ({card.get('method', '')}) from the Guided Distillation Lab.",
        "",
        (
            f"Teacher: {card.get('teacher') or '—'}; classes: {card.get('num_classes')} (null class {card.get('null_class')}); "
            f"distilled steps: {card.get('steps') or 'any'}; w-conditioned: {bool(card.get('w_conditioned'))}."
        ),
        "",
        "Sample it with `python -m demo.sample --model OWNER/NAME@COMMIT --n 16 --steps S --guidance W --out grid.png`.",
        "",
    ]
    return "\n".join(lines)


def check_repo_id(repo_id: str) -> str:
    """`owner/name` for pushing (no revision); HubError otherwise."""
    if _SPEC.match(str(repo_id)) is None or "@" in str(repo_id):
        raise HubError(f"--push-to-hub needs a repository id like owner/name, got {repo_id!r}.")
    return str(repo_id)


def push_model_folder(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a model folder's JSON and safetensors files (plus a README) to `repo_id`; returns `repo_id@commit`."""
    import json

    from huggingface_hub import HfApi, errors

    folder = Path(folder)
    check_repo_id(repo_id)
    if _offline():
        raise HubError(f"Cannot push to {repo_id}: HF_HUB_OFFLINE is set.")
    card = json.loads((folder / "card.json").read_text()) if (folder / "card.json").is_file() else {}
    (folder / "README.md").write_text(model_card_text(card))
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), allow_patterns=[*ALLOW_PATTERNS, "README.md"], commit_message=f"Upload {card.get('name', folder.name)}"
        )
    except (OSError, errors.HfHubHTTPError) as e:
        raise HubError(f"Cannot push {folder} to {repo_id} on the Hugging Face Hub ({type(e).__name__}).") from None
    return f"{repo_id}@{info.oid}"
