"""Text-conditional models (issue 26): a saved `StableDiffusionPipeline` folder of tiny random components (no download)
samples through `python -m demo.sample` as diffusers' own pipeline does with the same prompt, negative prompt, guidance
and seed; prompts index the embedding table as classes do; bad prompts and bad text folders are one sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import make_tiny_sd_pipeline

from demo.core.generate import generate
from demo.core.guidance import branch_eps
from demo.core.models import ModelFolderError, load_model_folder
from demo.sample import main as sample_main

# Our sampler and diffusers' pipeline run the same float32 arithmetic in a different order (our CFG batch is
# [prompt, negative], diffusers' [negative, prompt]; we step through x0, diffusers through ε), in one process with one
# thread: measured differences are ~5e-7 on images in [0, 1], so 1e-5 (the bound) has a 20x margin.
# The step count divides T = 1000: for one that does not (6), diffusers' DDIMScheduler steps each z to t − T // steps,
# which is not the next timestep it evaluates (999 → 833, then evaluated at 832) and ends at t = 0 instead of clean
# data; our DDIM steps along its own grid, so the images then differ by ~1e-3 (README, "Text-conditional models").
TOLERANCE = 1e-5
STEPS = 8


@pytest.fixture(scope="module", params=["ddim", "dpm"])
def sd_folder(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd") / f"tiny-sd-{request.param}"
    make_tiny_sd_pipeline(folder, seed=3, scheduler=request.param)
    return folder, request.param


def _diffusers_images(folder, prompts, negative, W, steps, seed):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        list(prompts),
        negative_prompt=[negative] * len(prompts) if negative is not None else None,
        num_inference_steps=steps,
        guidance_scale=W,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images


@pytest.mark.parametrize("negative", [None, "blurry, low contrast"])
def test_cli_samples_a_saved_sd_pipeline_as_diffusers_does(sd_folder, negative, tmp_path, capsys):
    folder, scheduler = sd_folder
    sampler = {"ddim": "ddim", "dpm": "dpmsolver++"}[scheduler]
    prompts, W, steps, seed = ["a sandal", "a dark coat with stripes"], 4.0, STEPS, 11
    out = tmp_path / "out.npz"
    argv = ["--model", str(folder), "--n", "2", "--steps", str(steps), "--guidance", str(W), "--sampler", sampler]
    argv += ["--seed", str(seed), "--out", str(out), "--save-float"]
    argv += [a for p in prompts for a in ("--prompt", p)] + (["--negative-prompt", negative] if negative else [])
    assert sample_main(argv) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["nfe"] == 2 * steps
    ours = np.load(out)
    expected = _diffusers_images(folder, prompts, negative, W, steps, seed)
    assert ours["images_float"].shape == expected.shape == (2, 32, 32, 3)
    assert np.abs(ours["images_float"] - expected).max() < TOLERANCE
    assert list(ours["prompts"]) == prompts and list(ours["labels"]) == [0, 1]
    assert ours["images"].dtype == np.uint8 and ours["images"].shape == (2, 32, 32, 3)


def test_prompts_index_like_classes_and_the_negative_prompt_is_the_null_branch(sd_folder):
    folder, _ = sd_folder
    model = load_model_folder(folder)
    assert model.is_text and model.card.conditioning == "text" and model.card.space == "latent"
    kw = {"steps": 3, "guidance": 3.0, "seed": 4}
    both = generate(model, n=4, prompt=["a shirt", "a bag"], **kw)
    assert both.labels.tolist() == [0, 1, 0, 1]
    second = generate(model, n=4, prompt=["a shirt", "a bag"], class_label=1, **kw)
    assert second.labels.tolist() == [1, 1, 1, 1]
    # The same noise row with the same prompt gives the same image, whichever prompts sit beside it.
    assert torch.allclose(both.images[1], second.images[1], atol=TOLERANCE)
    assert not torch.allclose(both.images[0], second.images[0], atol=1e-3)
    other_negative = generate(model, n=4, prompt=["a shirt", "a bag"], negative_prompt="a bag", **kw)
    assert (other_negative.images - both.images).abs().max() > 1e-3  # the negative prompt is the unconditional branch
    bound = model.with_prompts(["a shirt"], "a bag")
    assert bound.card.class_names == ["a shirt"] and bound.null_class == 1 and model.card.num_classes == 0
    assert model.with_prompts(["a shirt"], "a bag") is bound  # encoded once per (prompts, negative)
    z = torch.randn(2, *model.sample_shape, generator=torch.Generator().manual_seed(0))
    eps_c, eps_u = branch_eps(bound, z, torch.tensor([500, 500]), torch.tensor([0, 0]))
    assert eps_c.shape == z.shape and (eps_c - eps_u).abs().max() > 0  # Δ = ε(prompt) − ε(negative prompt)


def test_prompt_and_class_mistakes_are_one_sentence(sd_folder, tiny_teacher):
    folder, _ = sd_folder
    model = load_model_folder(folder)
    with pytest.raises(ValueError, match="is text-conditional: give it a prompt"):
        generate(model, n=1, steps=2)
    with pytest.raises(ValueError, match="is class-conditional: it takes a class label, not a prompt"):
        generate(tiny_teacher, n=1, steps=2, prompt="a sandal")
    with pytest.raises(ValueError, match="prompt must be at most 64 texts"):
        generate(model, n=1, steps=2, prompt=["x"] * 65)
    with pytest.raises(ValueError, match="class label must be in 0..1"):
        generate(model, n=1, steps=2, prompt=["a", "b"], class_label=2)


def _copy(folder, tmp_path):
    import shutil

    dest = tmp_path / "sd"
    shutil.copytree(folder, dest)
    return dest


def test_bad_text_folders_are_one_sentence(sd_folder, tmp_path):
    folder, _ = sd_folder
    bad = _copy(folder, tmp_path)
    (bad / "text_encoder" / "model.safetensors").rename(bad / "text_encoder" / "pytorch_model.bin")
    with pytest.raises(ModelFolderError, match=r"no text_encoder/model.safetensors \(found pytorch_model.bin; pickled"):
        load_model_folder(bad)
    bad2 = _copy(folder, tmp_path / "2")
    config = json.loads((bad2 / "text_encoder" / "config.json").read_text())
    (bad2 / "text_encoder" / "config.json").write_text(json.dumps({**config, "architectures": ["EvilModel"]}))
    with pytest.raises(ModelFolderError, match="must name one of CLIPTextModel, CLIPTextModelWithProjection"):
        load_model_folder(bad2)
    bad3 = _copy(folder, tmp_path / "3")
    for f in (bad3 / "tokenizer").iterdir():
        f.unlink()
    with pytest.raises(ModelFolderError, match="needs a tokenizer/ folder"):
        load_model_folder(bad3)


def test_cli_refuses_a_prompt_for_a_class_model_in_one_line(tiny_teacher_dir, tmp_path, capsys):
    code = sample_main(["--model", str(tiny_teacher_dir), "--prompt", "a sandal", "--n", "1", "--out", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "class-conditional" in err and len(err.splitlines()) == 1


def test_a_text_unet_without_its_text_encoder_is_one_sentence(sd_folder, tmp_path):
    import shutil

    folder, _ = sd_folder
    bad = _copy(folder, tmp_path)
    shutil.rmtree(bad / "text_encoder")
    with pytest.raises(ModelFolderError, match=r"has a text-conditional UNet but no text_encoder/ folder"):
        load_model_folder(bad)


def test_a_tokenizer_json_alone_pads_to_the_encoders_length_and_mismatched_parts_are_one_sentence(sd_folder, tmp_path):
    """A folder whose tokenizer sets no model_max_length (tokenizer.json only; transformers then reports 1e30, on which
    diffusers' pipeline fails) pads to the text encoder's max_position_embeddings and samples the original's images;
    a tokenizer longer than its encoder, and an encoder narrower than the UNet's cross-attention, are refused."""
    from transformers import CLIPTextConfig, CLIPTextModel

    folder, _ = sd_folder
    bare = _copy(folder, tmp_path / "bare")
    (bare / "tokenizer" / "tokenizer_config.json").unlink()
    model, original = load_model_folder(bare), load_model_folder(folder)
    assert model.tokenizer.model_max_length == model.text_encoder.config.max_position_embeddings == 16
    a, b = (generate(m, n=2, steps=2, prompt=["a dark sandal", "a bag"], seed=5).images for m in (model, original))
    assert torch.equal(a, b)  # one process, the same parts and arithmetic: bit-identical

    long = _copy(folder, tmp_path / "long")
    config = json.loads((long / "tokenizer" / "tokenizer_config.json").read_text())
    (long / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 77}))
    with pytest.raises(ModelFolderError, match=r"pads prompts to 77 tokens.*model_max_length must be at most 16"):
        load_model_folder(long)

    wide = _copy(folder, tmp_path / "wide")
    enc = CLIPTextModel(CLIPTextConfig(**{**original.text_encoder.config.to_dict(), "hidden_size": 24}))
    enc.save_pretrained(wide / "text_encoder", safe_serialization=True)
    with pytest.raises(ModelFolderError, match=r"text encoder is 24 wide but its UNet's cross_attention_dim is 16"):
        load_model_folder(wide)


def test_a_guidance_conditioned_text_student_refuses_a_negative_prompt_in_one_sentence(sd_folder, tmp_path, capsys):
    """A w-conditioned student has no unconditional branch to put the negative prompt in (as diffusers' LCM pipeline):
    a negative prompt is refused, by the library and by the command, instead of silently ignored."""
    from dataclasses import replace

    from demo.core.text import guidance_text_unet

    folder, _ = sd_folder
    model = load_model_folder(folder)
    student = replace(model, net=guidance_text_unet(model.net), card=replace(model.card, w_conditioned=True))
    with pytest.raises(ValueError, match=r"^negative prompt: .* guidance-conditioned student .* leave the negative prompt empty"):
        generate(student, n=1, steps=2, prompt="a bag", negative_prompt="blurry")
    assert generate(student, n=1, steps=2, prompt="a bag", negative_prompt="").nfe == 2  # no negative prompt: sampled

    w_folder = _copy(folder, tmp_path / "w")
    student.net.save_pretrained(w_folder / "unet", safe_serialization=True)
    card_path = w_folder / "card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    card_path.write_text(json.dumps({**card, "w_conditioned": True}))
    argv = ["--model", str(w_folder), "--prompt", "a bag", "--negative-prompt", "blurry", "--n", "1", "--steps", "2"]
    assert sample_main([*argv, "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: negative prompt:") and len(err.splitlines()) == 1


def test_a_prompts_file_saved_with_a_byte_order_mark_reads_its_first_prompt_cleanly(tmp_path):
    import types

    from demo.core.cli import prompts_from_args

    f = tmp_path / "p.txt"
    f.write_bytes("\ufeffa sandal\r\n\r\na bag\n".encode())
    assert prompts_from_args(types.SimpleNamespace(prompt=None, prompts_file=str(f))) == ["a sandal", "a bag"]
