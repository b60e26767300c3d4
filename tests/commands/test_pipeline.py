"""Model folders round-trip through diffusers (ARCHITECTURE.md, issue 25): `model_index.json` written by
`save_model_folder`, `save_pretrained` → `DiffusionPipeline.from_pretrained` → the same images, diffusers' call
arguments, and `card.json` / TIRT logits carried along. Tiny models, CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from diffusers import DiffusionPipeline

from demo.core.paths import REPO_ROOT
from demo.pipeline import GuidedPipeline

REPO = REPO_ROOT  # demo.core.paths: the one definition of the repository's folders


@pytest.fixture(scope="module")
def tiny_student_dir(tiny_teacher, tmp_path_factory):
    """A w-conditioned student (GuidanceUNet, a class from this project rather than diffusers) saved as a model folder."""
    from demo.core.models import Card, default_scheduler, save_model_folder
    from demo.distill.guided import GuidanceUNet

    torch.manual_seed(1)
    net = GuidanceUNet.from_teacher(tiny_teacher.net)
    for p in net.unet.class_embedding.w_mlp.parameters():  # non-zero, so W changes the output
        torch.nn.init.normal_(p, std=0.1)
    card = Card(name="tiny-student", kind="student", method="guided", teacher="tiny-teacher", steps=2, w_conditioned=True)
    return save_model_folder(tmp_path_factory.mktemp("models") / "tiny-student", net, default_scheduler(), card)


def _images(pipe, **kw):
    return pipe(
        class_labels="all", num_images_per_prompt=3, guidance_scale=3.0, num_inference_steps=2, output_type="pt", **kw
    ).images


@pytest.mark.parametrize("folder", ["tiny_teacher_dir", "tiny_student_dir", "tiny_latent_dir"])
def test_save_pretrained_then_diffusion_pipeline_from_pretrained_gives_the_same_images(folder, request, tmp_path):
    source = request.getfixturevalue(folder)
    index = json.loads((source / "model_index.json").read_text())  # written by save_model_folder
    assert index["_class_name"] == "GuidedPipeline" and index["scheduler"] == ["diffusers", "DDPMScheduler"]
    ours = GuidedPipeline.from_model_folder(source)
    before = _images(ours)
    ours.save_pretrained(tmp_path / "saved")
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "saved")  # a plain diffusers call
    assert type(loaded) is GuidedPipeline
    after = _images(loaded)
    assert before.std() > 0.01 and float((before - after).abs().max()) < 1e-6
    # the folder as written by a run loads the same way, and the project's loader reads the saved folder
    assert float((_images(DiffusionPipeline.from_pretrained(source)) - before).abs().max()) < 1e-6
    assert float((_images(GuidedPipeline.from_model_folder(tmp_path / "saved")) - before).abs().max()) < 1e-6


def test_components_carry_diffusers_names_and_the_card_and_tirt_travel_along(tiny_teacher_dir, tiny_latent_dir, tmp_path):
    pixel = GuidedPipeline.from_model_folder(tiny_teacher_dir)
    assert pixel.unet is not None and pixel.transformer is None and pixel.vae is None
    latent = GuidedPipeline.from_model_folder(tiny_latent_dir)
    assert latent.transformer is not None and latent.unet is None and latent.vae is not None
    latent.save_pretrained(tmp_path / "dit")
    assert {"model_index.json", "card.json", "tirt.safetensors", "transformer", "vae", "scheduler"} <= {
        p.name for p in (tmp_path / "dit").iterdir()
    }
    back = DiffusionPipeline.from_pretrained(tmp_path / "dit")
    assert back.loaded.card.name == "tiny-dit-teacher" and back.loaded.is_latent
    assert torch.equal(back.loaded.tirt_logits, latent.loaded.tirt_logits)
    with pytest.raises(ValueError, match="exactly one denoiser"):
        GuidedPipeline(pixel.scheduler)
    built = GuidedPipeline(pixel.scheduler, unet=pixel.unet)  # components in memory, no folder: the card's defaults
    assert built.loaded.card.num_classes == 10 and built.loaded.tirt_logits is None
    built.save_pretrained(tmp_path / "built")
    assert json.loads((tmp_path / "built" / "card.json").read_text())["null_class"] == 10


def test_diffusers_call_arguments(tiny_teacher_dir):
    pipe = GuidedPipeline.from_model_folder(tiny_teacher_dir)
    by_seed = pipe(class_labels=[1, 4], num_images_per_prompt=2, num_inference_steps=2, seed=7, output_type="pt")
    assert by_seed.labels.tolist() == [1, 1, 4, 4]  # each label num_images_per_prompt times
    by_generator = pipe(
        class_labels=[1, 4],
        num_images_per_prompt=2,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(7),
        output_type="pt",
    )
    assert torch.equal(by_seed.images, by_generator.images)  # seed s and a generator seeded with s draw the same z_T
    seen = []

    def on_step_end(p, i, t, kwargs):
        assert p is pipe
        seen.append((i, int(t), tuple(kwargs["latents"].shape), sorted(kwargs)))
        return kwargs

    images, labels = pipe(
        class_labels=3,
        num_images_per_prompt=2,
        num_inference_steps=3,
        callback_on_step_end=on_step_end,
        callback_on_step_end_tensor_inputs=["latents", "x0"],
        output_type="np",
        return_dict=False,
    )
    assert images.shape == (2, 28, 28) and images.dtype.name == "uint8" and labels.tolist() == [3, 3]
    assert [s[0] for s in seen] == [0, 1, 2] and seen[0][1] > seen[-1][1] and seen[0][2:] == ((2, 1, 28, 28), ["latents", "x0"])
    with pytest.raises(ValueError, match="seed or generator"):
        pipe(seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe(
            num_images_per_prompt=1,
            num_inference_steps=1,
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=["prompt_embeds"],
        )


@pytest.mark.slow
def test_a_fresh_interpreter_loads_a_student_with_diffusers_after_importing_demo_pipeline(tiny_student_dir):
    """diffusers imports no module a repository names: `import demo.pipeline` must bring the student classes along."""
    code = (
        "import demo.pipeline\nfrom diffusers import DiffusionPipeline\n"
        f"pipe = DiffusionPipeline.from_pretrained({str(tiny_student_dir)!r})\n"
        "print(type(pipe.unet).__name__, pipe(num_images_per_prompt=2, num_inference_steps=1, output_type='np').images.shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "GuidanceUNet (2, 28, 28)"


@pytest.mark.slow
def test_write_index_adds_model_index_json_to_an_older_folder(tiny_student_dir, tmp_path):
    import shutil

    old = shutil.copytree(tiny_student_dir, tmp_path / "old")
    (old / "model_index.json").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "demo.pipeline", "--write-index", str(old)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((old / "model_index.json").read_text())["unet"] == ["demo.distill.guided", "GuidanceUNet"]


def test_every_shipped_model_folder_has_a_model_index():
    folders = [p for p in (REPO / "assets" / "models").iterdir() if (p / "unet" / "config.json").is_file()]
    missing = [p.name for p in folders if not (p / "model_index.json").is_file()]
    missing += [  # a text folder's index written before it named the text encoder
        p.name
        for p in folders
        if p.name not in missing
        and (p / "text_encoder").is_dir()
        and "text_encoder" not in json.loads((p / "model_index.json").read_text())
    ]
    assert folders and not missing, (
        f"run: python -m demo.pipeline --write-index {' '.join('assets/models/' + m for m in missing)}"
    )


def test_a_text_folder_loads_with_its_text_encoder_and_samples_from_prompts(tmp_path):
    """A text-conditional folder's `model_index.json` names transformers' CLIP classes, so a plain diffusers call builds
    the pipeline with its text encoder and tokenizer; `prompt=` / `negative_prompt=` give what `demo.sample` gives.
    Tolerance 1e-6: the same process and thread count, float32 on both sides (only summation order could differ)."""
    from helpers import make_tiny_text_teacher

    from demo.core.generate import generate
    from demo.core.models import load_model_folder

    folder = make_tiny_text_teacher(tmp_path / "m" / "tiny-text-teacher")
    index = json.loads((folder / "model_index.json").read_text())  # written by save_text_model_folder
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"] and index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    pipe = DiffusionPipeline.from_pretrained(folder)
    assert type(pipe) is GuidedPipeline and pipe.text_encoder is not None and pipe.tokenizer is not None
    prompts, kw = ["a sandal", "a dark bag"], {"guidance_scale": 3.0, "num_inference_steps": 2, "seed": 5}
    out = pipe(prompt=prompts, negative_prompt="a shirt", num_images_per_prompt=2, output_type="pt", **kw)
    images = out.images  # diffusers' order: each prompt num_images_per_prompt times, one after another
    model = load_model_folder(folder)
    expected = generate(model, 4, labels=[0, 0, 1, 1], steps=2, guidance=3.0, seed=5, prompt=prompts, negative_prompt="a shirt")
    assert out.labels.tolist() == [0, 0, 1, 1] and images.shape[0] == 4
    assert images.std() > 0.01 and float((images - expected.images).abs().max()) < 1e-6
    pipe.save_pretrained(tmp_path / "saved")  # and back: the text parts travel along
    again = GuidedPipeline.from_pretrained(tmp_path / "saved")(
        prompt=prompts, negative_prompt="a shirt", num_images_per_prompt=2, output_type="pt", **kw
    )
    assert float((again.images - images).abs().max()) < 1e-6
    one = pipe(prompt="a sandal", class_labels=[0], num_images_per_prompt=2, output_type="np", **kw).images
    assert one.shape[0] == 2
    with pytest.raises(ValueError, match="prompt"):  # a text model without prompts: one sentence
        pipe(num_images_per_prompt=2, num_inference_steps=1)
    with pytest.raises(ValueError, match="is text-conditional: give it a prompt"):
        pipe(class_labels=[0, 1], num_inference_steps=1)


def test_a_stable_diffusion_folder_keeps_its_unet_named_unet(tmp_path):
    """diffusers' layout: a latent text model's UNet is the pipeline's `unet` (saved to unet/), not `transformer`."""
    from helpers import make_tiny_sd_pipeline

    make_tiny_sd_pipeline(tmp_path / "sd")
    pipe = GuidedPipeline.from_model_folder(tmp_path / "sd")
    assert pipe.unet is not None and pipe.transformer is None and pipe.vae is not None
    pipe.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "unet").is_dir() and not (tmp_path / "saved" / "transformer").exists()
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["unet"][1] == "UNet2DConditionModel" and index.get("transformer", [None])[0] is None
