"""Shared fixtures: tiny models (UNet2DModel with block_out_channels=(8, 16)) written as real model folders."""

from __future__ import annotations

import os
import tempfile

# One torch thread everywhere, set before torch (and its OpenMP runtime) is imported, so every thread of this process
# and every subprocess a test starts reduce floats in the same order: outputs compared across processes are equal.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Cached evaluation features (analysis.protocol) go to a temporary folder, never the repository's runs/.
os.environ.setdefault("GDL_FEATURES_DIR", tempfile.mkdtemp(prefix="gdl-features-"))

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import make_tiny_latent_teacher, make_tiny_teacher  # noqa: E402

TORCH_THREADS = 1
torch.set_num_threads(TORCH_THREADS)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts with TORCH_THREADS torch threads, and one that changes the count (an in-process CLI's
    --threads, a library's own setting) does not leak it into the tests after it: results cannot depend on test order."""
    torch.set_num_threads(TORCH_THREADS)
    yield
    torch.set_num_threads(TORCH_THREADS)


@pytest.fixture(scope="session")
def tiny_latent_dir(tmp_path_factory):
    return make_tiny_latent_teacher(tmp_path_factory.mktemp("models") / "tiny-dit-teacher")


@pytest.fixture(scope="session")
def tiny_latent(tiny_latent_dir):
    from demo.core.models import load_model_folder

    return load_model_folder(tiny_latent_dir)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory):
    return make_tiny_teacher(tmp_path_factory.mktemp("models") / "tiny-teacher")


@pytest.fixture(scope="session")
def tiny_teacher(tiny_teacher_dir):
    from demo.core.models import load_model_folder

    return load_model_folder(tiny_teacher_dir)


@pytest.fixture(scope="module")
def isolated_runs(tmp_path_factory):
    """Keep the Distill tab's job store (GDL_RUNS_DIR) out of the repository while an app is built."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GDL_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
        yield
