"""Shared fixtures: tiny models (UNet2DModel with block_out_channels=(8, 16)) written as real model folders."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile

# One torch thread everywhere, set before torch (and its OpenMP runtime) is imported, so every thread of this process
# and every subprocess a test starts reduce floats in the same order: outputs compared across processes are equal.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Cached evaluation features (analysis.protocol) go to a temporary folder, never the repository's runs/.
os.environ.setdefault("GDL_FEATURES_DIR", tempfile.mkdtemp(prefix="gdl-features-"))

import pytest  # noqa: E402
import torch  # noqa: E402

TORCH_THREADS = 1
torch.set_num_threads(TORCH_THREADS)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts with TORCH_THREADS torch threads, and one that changes the count (an in-process CLI's
    --threads, a library's own setting) does not leak it into the tests after it: results cannot depend on test order."""
    torch.set_num_threads(TORCH_THREADS)
    yield
    torch.set_num_threads(TORCH_THREADS)


def make_tiny_teacher(folder, seed: int = 0, prediction_type: str = "v_prediction", name: str = "tiny-teacher"):
    from demo.models import Card, default_scheduler, save_model_folder, teacher_unet

    torch.manual_seed(seed)
    net = teacher_unet(channels=(8, 16), layers_per_block=1, attention=False)
    tirt = {"tirt.safetensors": {"lambda_t": torch.randn(1000, generator=torch.Generator().manual_seed(seed)) * 0.1}}
    return save_model_folder(folder, net, default_scheduler(prediction_type), Card(name=name), tirt)


# A DiT-XL/2-shaped latent teacher in miniature, built from plain diffusers configs (as a paper author's would be):
# ε-prediction on a linear schedule, a learned-variance output (2x channels), 10 classes + the null class 10.
TINY_DIT_CONFIG = {
    "num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 4, "out_channels": 8, "num_layers": 2,
    "sample_size": 16, "patch_size": 2, "num_embeds_ada_norm": 10, "norm_num_groups": 1,
}  # fmt: skip
TINY_VAE_CONFIG = {
    "in_channels": 1, "out_channels": 1, "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
    "block_out_channels": [8, 8], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 4, "sample_size": 32,
}  # fmt: skip


def make_tiny_latent_teacher(folder, seed: int = 0, name: str = "tiny-dit-teacher"):
    """transformer/ (DiTTransformer2DModel), vae/ (AutoencoderKL, 32x32 grey ↔ 4x16x16), scheduler/, card.json."""
    from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel

    from demo.models import Card, save_model_folder

    torch.manual_seed(seed)
    net = DiTTransformer2DModel.from_config(TINY_DIT_CONFIG)
    vae = AutoencoderKL.from_config(TINY_VAE_CONFIG)
    scheduler = DDPMScheduler(beta_schedule="linear", prediction_type="epsilon", timestep_spacing="trailing", clip_sample=False)
    tirt = {"tirt.safetensors": {"lambda_t": torch.randn(1000, generator=torch.Generator().manual_seed(seed)) * 0.1}}
    return save_model_folder(folder, net, scheduler, Card(name=name), tirt, vae=vae)


@pytest.fixture(scope="session")
def tiny_latent_dir(tmp_path_factory):
    return make_tiny_latent_teacher(tmp_path_factory.mktemp("models") / "tiny-dit-teacher")


@pytest.fixture(scope="session")
def tiny_latent(tiny_latent_dir):
    from demo.models import load_model_folder

    return load_model_folder(tiny_latent_dir)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory):
    return make_tiny_teacher(tmp_path_factory.mktemp("models") / "tiny-teacher")


@pytest.fixture(scope="session")
def tiny_teacher(tiny_teacher_dir):
    from demo.models import load_model_folder

    return load_model_folder(tiny_teacher_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def isolated_runs(tmp_path_factory):
    """Keep the Distill tab's job store (GDL_RUNS_DIR) out of the repository while an app is built."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GDL_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
        yield


@contextlib.contextmanager
def serve_app(settings, max_size: int = 8, concurrency: int = 2):
    """Build, queue and launch the app on a free loopback port; yields its URL and closes it afterwards."""
    from demo.ui import build_app, launch_kwargs

    app = build_app(settings)
    app.queue(max_size=max_size, default_concurrency_limit=concurrency)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()
