"""Latent DiT teachers (issue 8): a tiny random DiT + VAE folder built from diffusers configs is loaded, sampled with
CFG through the pipeline and the CLI, and every method runs 2 iterations on it through `demo.distill`."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, DiTTransformer2DModel
from helpers import TINY_DIT_CONFIG, tiny_run_argv

from demo.core.data import BatchSampler
from demo.core.generate import generate
from demo.core.guidance import make_denoiser
from demo.core.latent import LatentBatches, fit_to_vae, model_space
from demo.core.models import Card, count_parameters, load_model_folder, net_output, no_label_dropout, save_model_folder
from demo.core.paths import REPO_ROOT
from demo.core.samplers import initial_noise, sample
from demo.distill import METHODS
from demo.distill.dash import compact_dit
from demo.distill.guided import GuidanceDiT, GuidanceUNet
from demo.distill.hd import _Bottleneck

REPO = REPO_ROOT  # demo.core.paths: the one definition of the repository's folders


def tiny_pixels(batch_size=2, n=16, seed=0):
    rng = np.random.default_rng(seed)
    return BatchSampler(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n), batch_size)


@pytest.fixture(scope="module")
def tiny_latent_guided_dir(tiny_latent, tmp_path_factory):
    """A w-conditioned one-step latent student (GuidanceDiT from the tiny DiT teacher, untrained)."""
    card = Card(name="tiny-dit-guided", kind="student", method="guided", teacher=tiny_latent.name, steps=1, w_conditioned=True)
    folder = tmp_path_factory.mktemp("m") / "tiny-dit-guided"
    scheduler = DDPMScheduler.from_config(tiny_latent.scheduler_config)
    return save_model_folder(folder, GuidanceDiT.from_teacher(tiny_latent.net), scheduler, card, vae=tiny_latent.vae)


# ---- the folder and the loader ----


def test_latent_folder_layout_loads_as_a_latent_model(tiny_latent_dir, tiny_latent):
    assert {p.name for p in tiny_latent_dir.iterdir()} >= {"transformer", "vae", "scheduler", "card.json"}
    assert not (tiny_latent_dir / "unet").exists()
    m = tiny_latent
    assert isinstance(m.net, DiTTransformer2DModel) and m.is_latent
    assert m.sample_shape == (4, 16, 16)  # latents, not images
    assert (m.card.space, m.card.image_size, m.card.channels, m.card.null_class) == ("latent", 32, 1, 10)
    assert m.prediction_type == "epsilon"


def test_card_is_inferred_for_a_plain_diffusers_folder(tiny_latent_dir, tmp_path):
    """A checkpoint without our card.json (any diffusers DiT folder): classes and null class come from the config."""
    import shutil

    folder = shutil.copytree(tiny_latent_dir, tmp_path / "no-card")
    (folder / "card.json").unlink()
    m = load_model_folder(folder)
    assert (m.card.num_classes, m.card.null_class, m.card.space, m.card.image_size) == (10, 10, "latent", 32)


def test_sharded_safetensors_load_and_pickles_still_do_not(tiny_latent_dir, tiny_latent, tmp_path):
    """Big checkpoints come as diffusers' sharded safetensors (an index plus shards); they load like one file."""
    import shutil

    from demo.core.models import WEIGHTS_NAME, ModelFolderError

    folder = shutil.copytree(tiny_latent_dir, tmp_path / "sharded")
    (folder / "transformer" / WEIGHTS_NAME).unlink()
    tiny_latent.net.save_pretrained(folder / "transformer", safe_serialization=True, max_shard_size="20KB")
    (folder / "transformer" / WEIGHTS_NAME).unlink(missing_ok=True)
    assert (folder / "transformer" / f"{WEIGHTS_NAME}.index.json").is_file()
    loaded = load_model_folder(folder)
    assert all(torch.equal(a, b) for a, b in zip(loaded.net.state_dict().values(), tiny_latent.net.state_dict().values()))
    for f in (folder / "transformer").glob("*.safetensors*"):
        f.unlink()
    torch.save({}, folder / "transformer" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelFolderError, match="pickled weights are never loaded"):
        load_model_folder(folder)


def test_net_output_calls_every_denoiser_the_same_way(tiny_teacher, tiny_latent):
    z_pix, z_lat = torch.randn(3, 1, 28, 28), torch.randn(3, 4, 16, 16)
    t, y, w = torch.tensor([3, 400, 999]), torch.tensor([0, 5, 10]), torch.tensor([1.0, 2.0, 7.0])
    with torch.no_grad():
        assert net_output(tiny_teacher.net, z_pix, t, y).shape == z_pix.shape
        assert net_output(GuidanceUNet.from_teacher(tiny_teacher.net), z_pix, t, y, w).shape == z_pix.shape
        full = tiny_latent.net(z_lat, timestep=t, class_labels=y).sample
        assert full.shape == (3, 8, 16, 16)  # learned variance: [mean, variance] channels
        assert torch.equal(net_output(tiny_latent.net, z_lat, t, y), full[:, :4])
        assert net_output(GuidanceDiT.from_teacher(tiny_latent.net), z_lat, t, y, w).shape == z_lat.shape
        one = net_output(tiny_latent.net, z_lat[1:2], 400, y[1:2])  # an int timestep is broadcast to [B]
        assert torch.allclose(one, full[1:2, :4], atol=1e-5)


def test_dit_label_dropout_is_off_in_train_mode(tiny_latent):
    """diffusers' DiT drops labels at random in train mode; a distilled student must see the labels it is given."""
    net = copy.deepcopy(tiny_latent.net).train()
    z, t, y = torch.randn(64, 4, 16, 16), torch.full((64,), 500), torch.arange(64) % 10
    with torch.no_grad():
        assert torch.equal(net_output(net, z, t, y), net_output(net, z, t, y))
        raw = DiTTransformer2DModel.from_config(TINY_DIT_CONFIG).train()
        assert not torch.equal(raw(z, timestep=t, class_labels=y).sample, raw(z, timestep=t, class_labels=y).sample)
        assert torch.equal(no_label_dropout(raw)(z, timestep=t, class_labels=y).sample, raw(z, timestep=t, class_labels=y).sample)


def test_guidance_dit_starts_as_the_teachers_conditional_model(tiny_latent):
    student = GuidanceDiT.from_teacher(tiny_latent.net)
    z, t, y = torch.randn(3, 4, 16, 16), torch.tensor([3, 400, 999]), torch.tensor([0, 5, 9])
    with torch.no_grad():
        a = net_output(tiny_latent.net, z, t, y)
        b = net_output(student, z, t, y, torch.tensor([1.0, 2.0, 7.0]))
    assert torch.allclose(a, b, atol=1e-5)
    assert sum(p.numel() for n, p in student.named_parameters() if ".w_mlp." in n) > 0


# ---- sampling: CFG on latents, decoded by the VAE ----


def test_generate_samples_latents_with_cfg_and_decodes_them(tiny_latent):
    gen = generate(tiny_latent, n=3, class_label="all", steps=2, guidance=2.0, sampler="ddim", seed=1)
    assert gen.images.shape == (3, 1, 32, 32) and gen.nfe == 4  # decoded images; 2 steps × 2 NFE
    # The same run by hand: the sampler on latents from the same noise, then the VAE decoder.
    labels = torch.arange(3)
    z0 = sample("ddim", make_denoiser(tiny_latent, labels, 2.0), initial_noise(1, 3, (4, 16, 16)), 2, tiny_latent.schedule)
    assert torch.allclose(gen.images, tiny_latent.decode(z0), atol=1e-5)


def test_pipeline_samples_with_cfg_and_calls_back_every_step(tiny_latent_dir):
    from demo.pipeline import GuidedPipeline

    pipe = GuidedPipeline.from_model_folder(tiny_latent_dir)
    seen = []
    out = pipe(class_labels=[3, 3], guidance_scale=3.0, num_inference_steps=3, seed=0, callback=seen.append, output_type="pt")
    assert out.images.shape == (2, 1, 32, 32) and out.labels.tolist() == [3, 3] and out.nfe == 6
    assert [s["i"] for s in seen] == [0, 1, 2]
    assert seen[0]["x0"].shape == (2, 1, 32, 32) and seen[0]["x0_latent"].shape == (2, 4, 16, 16)
    ref = generate(pipe.loaded, n=2, class_label=3, steps=3, guidance=3.0, sampler="ddim", seed=0)
    assert torch.equal(out.images, ref.images)
    pil = pipe(class_labels="all", n=2, num_inference_steps=1, output_type="pil").images
    assert len(pil) == 2 and pil[0].size == (32, 32)
    with pytest.raises(ValueError, match=r"class labels must be integers in 0\.\.9"):
        pipe(class_labels=[3, 10])  # 10 is the null class: not a class to ask for


@pytest.mark.slow
def test_sample_cli_on_a_latent_dit_folder(tiny_latent_dir, tmp_path):
    out = tmp_path / "samples.npz"
    cmd = [
        sys.executable,
        "-m",
        "demo.sample",
        "--model",
        str(tiny_latent_dir),
        "--n",
        "3",
        "--class-label",
        "all",
        "--steps",
        "2",
        "--guidance",
        "2",
        "--sampler",
        "ddim",
        "--seed",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    result = subprocess.run(
        cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["nfe"] == 4
    with np.load(out) as data:
        assert data["images"].dtype == np.uint8 and data["images"].shape == (3, 32, 32)
        assert data["labels"].tolist() == [0, 1, 2]


@pytest.mark.parametrize(("W", "steps"), [(1.0, 2), (3.0, 10)])
def test_a_saved_diffusers_dit_pipeline_samples_exactly_like_dit_pipeline(W, steps, tmp_path):
    """Any diffusers DiT checkpoint: `DiTPipeline.save_pretrained` (no card.json, null class 1000) loads as a model
    folder, and our CFG + DDIM + VAE decode reproduce diffusers' own DiTPipeline from the same seed."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline
    from helpers import TINY_VAE_CONFIG

    from demo.pipeline import GuidedPipeline

    torch.manual_seed(0)
    net = DiTTransformer2DModel.from_config({**TINY_DIT_CONFIG, "num_embeds_ada_norm": 1000}).eval()  # eval: no label dropout
    vae = AutoencoderKL.from_config(TINY_VAE_CONFIG).eval()
    sched = DDIMScheduler(beta_schedule="linear", timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False)
    theirs = DiTPipeline(net, vae, sched)
    theirs.set_progress_bar_config(disable=True)
    theirs.save_pretrained(tmp_path / "dit", safe_serialization=True)
    ours = GuidedPipeline.from_model_folder(tmp_path / "dit")
    assert (ours.loaded.card.num_classes, ours.loaded.null_class) == (1000, 1000)
    expected = theirs(
        class_labels=[1, 2],
        guidance_scale=W,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(5),
        output_type="np",
    ).images
    got = ours(class_labels=[1, 2], guidance_scale=W, num_inference_steps=steps, seed=5, output_type="pt").images
    assert float(expected.std()) > 0.01
    np.testing.assert_allclose((got.permute(0, 2, 3, 1).numpy() + 1) / 2, expected, atol=1e-5)  # [-1, 1] → diffusers' [0, 1]


# ---- training data in latent space ----


def test_latent_batches_are_vae_latents_of_the_pixel_batches(tiny_latent, tiny_teacher):
    pixels = tiny_pixels(4)
    latents = model_space(pixels, tiny_latent)
    assert isinstance(latents, LatentBatches) and model_space(pixels, tiny_teacher) is pixels
    z, y = latents.batch(3)
    x, y_pix = pixels.batch(3)
    assert z.shape == (4, 4, 16, 16) and torch.equal(y, y_pix)
    expected = tiny_latent.vae.encode(fit_to_vae(x, 1, 32)).latent_dist.mean * tiny_latent.vae.config.scaling_factor
    assert torch.allclose(z, expected, atol=1e-5)


# ---- every method on the DiT teacher, through the CLI ----


def distill_argv(name, teacher_dir, guided_dir, out):
    teacher = guided_dir if name == "progressive" else teacher_dir
    argv = [
        "--method",
        name,
        "--out",
        str(out),
        "--iterations",
        "2",
        "--batch-size",
        "2",
        "--mixed-precision",
        "no",
        "--log-every",
        "1",
        "--checkpoint-every",
        "2",
        "--steps",
        "1",
    ]
    if name == "teacher":
        return [*argv, "--init", str(teacher_dir)]
    argv += ["--teacher", str(teacher)]
    return [*argv, "--init", str(guided_dir)] if name in ("hd", "hd-gap", "dmd") else argv


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(METHODS) - {"text-teacher"}))  # it builds a text UNet; it takes no DiT
def test_every_method_runs_two_iterations_on_a_latent_dit_teacher(
    name, tiny_latent, tiny_latent_dir, tiny_latent_guided_dir, tmp_path, monkeypatch, capsys
):
    import demo.distill as registry
    from demo.distill.__main__ import main

    monkeypatch.setattr(registry, "_train_data", lambda args: tiny_pixels(args.batch_size))  # Fashion-MNIST-shaped pixels
    assert main(distill_argv(name, tiny_latent_dir, tiny_latent_guided_dir, tmp_path)) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2
    model = load_model_folder(tmp_path / "model")
    assert model.is_latent and (tmp_path / "model" / "transformer").is_dir() and not (tmp_path / "model" / "unet").exists()
    assert model.sample_shape == (4, 16, 16) and model.card.space == "latent"
    gen = generate(model, n=2, class_label="all", steps=1, guidance=2.0, sampler="ddim", seed=0)
    assert gen.images.shape == (2, 1, 32, 32) and torch.isfinite(gen.images).all()
    if name.startswith(("dash", "kd-")):  # DASH's student: a narrower, shallower plain DiT
        assert type(model.net) is DiTTransformer2DModel
        assert count_parameters(model.net) * 4 < count_parameters(tiny_latent.net)
    elif name != "teacher":
        assert model.card.w_conditioned and type(model.net) is GuidanceDiT


@pytest.mark.slow
def test_guided_distillation_cli_in_a_subprocess_encodes_real_idx_data(tiny_latent_dir, tmp_path):
    """The real command on IDX files: Fashion-MNIST pixels → VAE latents → one w-conditioned DiT student."""
    from helpers import write_idx

    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, size=(8, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", (np.arange(8) % 10).astype(np.uint8))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FASHION_MNIST_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "demo.distill", *tiny_run_argv("guided", tiny_latent_dir, tmp_path / "run")]
    result = subprocess.run(cmd, cwd=REPO, env=env, check=False, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    model = load_model_folder(tmp_path / "run" / "model")
    assert model.card.w_conditioned and model.is_latent


# ---- method pieces on a DiT ----


def test_hd_discriminator_reads_the_dit_middle_block_as_a_token_grid(tiny_latent):
    net = copy.deepcopy(tiny_latent.net)
    hook = _Bottleneck(net)
    with torch.no_grad():
        net_output(net, torch.randn(2, 4, 16, 16), torch.tensor([10, 900]), torch.tensor([1, 2]))
    inner = TINY_DIT_CONFIG["num_attention_heads"] * TINY_DIT_CONFIG["attention_head_dim"]
    assert hook.channels == inner and hook.feats.shape == (2, inner, 8, 8)  # 16/2 patches per side


def test_compact_dit_is_narrower_and_shallower(tiny_latent):
    small = compact_dit(tiny_latent.net)
    c, t = small.config, tiny_latent.net.config
    assert (c.num_attention_heads, c.num_layers) == (t.num_attention_heads // 2, t.num_layers // 2)
    assert (c.sample_size, c.patch_size, c.in_channels, c.num_embeds_ada_norm) == (
        t.sample_size,
        t.patch_size,
        t.in_channels,
        t.num_embeds_ada_norm,
    )
    assert c.out_channels == c.in_channels


def test_distill_trains_on_your_own_images_from_an_npz(tiny_latent_dir, tmp_path, capsys):
    """`--data FILE.npz`: RGB 20x20 images (not Fashion-MNIST) are fitted to the teacher's 32x32 grey VAE and encoded."""
    from demo.distill.__main__ import main

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", images=rng.integers(0, 256, (6, 20, 20, 3), dtype=np.uint8), labels=np.arange(6) % 10)
    argv = tiny_run_argv("dash", tiny_latent_dir, tmp_path / "run", "--data", str(tmp_path / "mine.npz"))
    assert main(argv) == 0
    assert load_model_folder(tmp_path / "run" / "model").is_latent
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4), np.float32), labels=np.zeros(2, np.int64))
    bad = tiny_run_argv("dash", tiny_latent_dir, tmp_path / "run2", "--data", str(tmp_path / "bad.npz"))
    assert main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must hold images uint8" in err[0]
