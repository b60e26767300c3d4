"""Shared fixtures: tiny models (UNet2DModel with block_out_channels=(8, 16)) written as real model folders."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def make_tiny_teacher(folder, seed: int = 0, prediction_type: str = "v_prediction", name: str = "tiny-teacher"):
    from demo.models import Card, default_scheduler, save_model_folder, teacher_unet

    torch.manual_seed(seed)
    net = teacher_unet(channels=(8, 16), layers_per_block=1, attention=False)
    tirt = {"tirt.safetensors": {"lambda_t": torch.randn(1000, generator=torch.Generator().manual_seed(seed)) * 0.1}}
    return save_model_folder(folder, net, default_scheduler(prediction_type), Card(name=name), tirt)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory):
    return make_tiny_teacher(tmp_path_factory.mktemp("models") / "tiny-teacher")


@pytest.fixture(scope="session")
def tiny_teacher(tiny_teacher_dir):
    from demo.models import load_model_folder

    return load_model_folder(tiny_teacher_dir)
