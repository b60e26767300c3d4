"""Builders the test modules share (tiny model folders, IDX files, an app model root, a served app, a tiny training
run); test modules import from here, never from each other."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import struct
from pathlib import Path

import numpy as np
import torch

from demo.core.data import BatchSampler
from demo.core.models import default_scheduler, teacher_unet
from demo.distill.teacher import TeacherTraining
from demo.distill.train import TrainConfig


def make_tiny_teacher(folder, seed: int = 0, prediction_type: str = "v_prediction", name: str = "tiny-teacher"):
    from demo.core.models import Card, default_scheduler, save_model_folder, teacher_unet

    torch.manual_seed(seed)
    net = teacher_unet(channels=(8, 16), layers_per_block=1, attention=False)
    tirt = {"tirt.safetensors": {"lambda_t": torch.randn(1000, generator=torch.Generator().manual_seed(seed)) * 0.1}}
    return save_model_folder(folder, net, default_scheduler(prediction_type), Card(name=name), tirt)


# A DiT-XL/2-shaped latent teacher in miniature, built from plain diffusers configs (as a paper author's would be):
# ε-prediction on a linear schedule, a learned-variance output (2x channels), 10 classes + the null class 10.
TINY_DIT_CONFIG = {
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "in_channels": 4,
    "out_channels": 8,
    "num_layers": 2,
    "sample_size": 16,
    "patch_size": 2,
    "num_embeds_ada_norm": 10,
    "norm_num_groups": 1,
}
TINY_VAE_CONFIG = {
    "in_channels": 1,
    "out_channels": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "block_out_channels": [8, 8],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 32,
}


def make_tiny_latent_teacher(folder, seed: int = 0, name: str = "tiny-dit-teacher"):
    """transformer/ (DiTTransformer2DModel), vae/ (AutoencoderKL, 32x32 grey ↔ 4x16x16), scheduler/, card.json."""
    from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel

    from demo.core.models import Card, save_model_folder

    torch.manual_seed(seed)
    net = DiTTransformer2DModel.from_config(TINY_DIT_CONFIG)
    vae = AutoencoderKL.from_config(TINY_VAE_CONFIG)
    scheduler = DDPMScheduler(beta_schedule="linear", prediction_type="epsilon", timestep_spacing="trailing", clip_sample=False)
    tirt = {"tirt.safetensors": {"lambda_t": torch.randn(1000, generator=torch.Generator().manual_seed(seed)) * 0.1}}
    return save_model_folder(folder, net, scheduler, Card(name=name), tirt, vae=vae)


def tiny_run_argv(method: str, teacher, out, *extra: str) -> list[str]:
    """`python -m demo.distill` flags for a test's run: `method` from `teacher` for 2 iterations at batch 2 in fp32 into
    `out`, then `extra` (a flag given twice takes its last value, as argparse does)."""
    base = ["--method", method, "--teacher", str(teacher), "--iterations", "2", "--batch-size", "2"]
    return [*base, "--mixed-precision", "no", "--out", str(out), *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(settings, max_size: int = 8, concurrency: int = 2):
    """Build, queue and launch the app on a free loopback port; yields its URL and closes it afterwards."""
    from demo.app.ui import build_app, launch_kwargs

    app = build_app(settings)
    app.queue(max_size=max_size, default_concurrency_limit=concurrency)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: magic 0x00 0x00 0x08 ndim, big-endian dims, then the data."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path, array: np.ndarray) -> None:
    data = idx_bytes(array)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_model_root(root: Path) -> Path:
    """Two tiny model folders (a teacher and a 2-step 'student') and a training log without a model yet."""
    make_tiny_teacher(root / "tiny-teacher")
    (root / "tiny-teacher" / "card.json").write_text(
        json.dumps(
            {
                **json.loads((root / "tiny-teacher" / "card.json").read_text()),
                "metrics": {"nfe": 128, "seconds": 0.5, "frechet_distance": 9.0},
            }
        )
    )
    make_tiny_teacher(root / "tiny-student", seed=1, name="tiny-student")
    card = json.loads((root / "tiny-student" / "card.json").read_text())
    card.update(
        kind="student",
        method="dash",
        teacher="tiny-teacher",
        steps=2,
        metrics={"2 steps": {"nfe": 4, "seconds": 0.05, "frechet_distance": 12.0}},
    )
    (root / "tiny-student" / "card.json").write_text(json.dumps(card))
    (root / "run-kd").mkdir()
    (root / "run-kd" / "stats.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1 / s}) + "\n" for s in range(1, 5)))
    return root


def settings_for(root: Path, tmp: Path, **kw):
    from demo.app.ui import AppSettings

    return AppSettings(
        model_roots=(str(root),), device="cpu", classifier_dir=str(tmp / "no-classifier"), data_dir=str(tmp / "no-data"), **kw
    )


class RecordingTeacher(TeacherTraining):
    """TeacherTraining that keeps a copy of the student's weights after every optimiser step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def after_step(self, step):
        self.after[step] = {k: v.detach().clone() for k, v in self.student.state_dict().items()}


def tiny_method(seed: int = 0) -> RecordingTeacher:
    """A tiny UNet trained on 16 random uint8 'images' (no dataset needed)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=16)
    torch.manual_seed(seed)
    net = teacher_unet(channels=(8, 16), layers_per_block=1, attention=False)
    return RecordingTeacher(net, default_scheduler(), BatchSampler(images, labels, batch_size=4, seed=0), card_name="tiny-run")


def config(iterations: int, **overrides) -> TrainConfig:
    # Constant lr after a 1-step warm-up (lr_final = 1), so a resumed run can be compared with an uninterrupted one.
    options = {
        "iterations": iterations,
        "batch_size": 4,
        "lr": 1e-3,
        "warmup": 1,
        "lr_final": 1.0,
        "mixed_precision": "no",
        "log_every": 1,
        "checkpoint_every": 1,
        "keep_checkpoints": 2,
    }
    return TrainConfig(**{**options, **overrides})


def tiny_clip_tokenizer(model_max_length: int = 16):
    """A CLIP tokenizer built offline: byte-level characters (plain and word-final) and no merges, so every text
    tokenizes (to one token per character), with CLIP's start and end tokens."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({c: 2 + i for i, c in enumerate(chars)})
    vocab.update({c + "</w>": 2 + len(chars) + i for i, c in enumerate(chars)})
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def make_tiny_sd_pipeline(folder, seed: int = 0, scheduler: str = "ddim"):
    """A `StableDiffusionPipeline` of tiny random components (no download), saved with `save_pretrained`: a
    UNet2DConditionModel on 4x8x8 latents, an RGB AutoencoderKL (32x32), a 2-layer CLIPTextModel and an offline CLIP
    tokenizer. `scheduler` "ddim" is a DDIMScheduler with trailing spacing, "dpm" DPM-Solver++(2M). Returns the pipeline."""
    from diffusers import AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[8, 8, 8],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).eval()
    common = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "timestep_spacing": "trailing"}
    if scheduler == "ddim":
        sched = DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, steps_offset=1)
    else:
        sched = DPMSolverMultistepScheduler(**common, final_sigmas_type="zero", lower_order_final=True)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


def tiny_npz(path, n: int = 40, seed: int = 0):
    """An images/labels npz of `n` random 28x28 grey images, every class present (`--data` for a tiny training run)."""
    rng = np.random.default_rng(seed)
    np.savez(path, images=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), labels=np.arange(n) % 10)
    return path


def make_tiny_text_teacher(folder, seed: int = 0):
    """A tiny text teacher folder (no training): UNet2DConditionModel (8, 16), a 1-layer 32-wide CLIP text encoder and
    the caption tokenizer, TIRT logits, and in its card the caption thresholds fitted on `tiny_npz` data written beside
    it as `data.npz`."""
    from safetensors.torch import save_file

    from demo.core.captions import AttributeThresholds, clip_tokenizer, measure_attributes
    from demo.core.models import Card, default_scheduler
    from demo.core.text import save_text_model_folder, text_unet
    from demo.distill.text_teacher import text_encoder

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tok = clip_tokenizer()
    images, labels = np.load(tiny_npz(folder.parent / "data.npz")).values()
    th = AttributeThresholds.fit(measure_attributes(images), labels)
    card = Card(name=folder.name, training={"captions": th.to_dict()})
    save_text_model_folder(folder, text_unet((8, 16), 1, 32), text_encoder(tok, 32, 1), tok, default_scheduler(), card)
    save_file({"lambda_t": torch.zeros(1000)}, str(folder / "tirt.safetensors"))
    return folder
