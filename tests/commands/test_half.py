"""`python -m demo.half`: a float16 copy of a model folder loads, samples like the original within rounding, is smaller."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from demo.core.models import load_model_folder
from demo.half import compare_copy, half_copy, main


def _size(folder):
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_half_copy_is_smaller_loads_and_matches(tiny_teacher_dir, tmp_path):
    dst = half_copy(tiny_teacher_dir, tmp_path / "half", name="tiny-half")
    weights = load_file(str(next((dst / "unet").glob("*.safetensors"))))
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    assert _size(dst / "unet") < 0.6 * _size(tiny_teacher_dir / "unet")
    card = json.loads((dst / "card.json").read_text())
    assert card["name"] == "tiny-half" and "metrics" not in card
    assert card["training"]["weights"].startswith("float16")
    a, b = load_model_folder(tiny_teacher_dir), load_model_folder(dst)
    z, t, y = torch.randn(2, 1, 28, 28), torch.tensor([10, 900]), torch.tensor([1, 4])
    with torch.no_grad():
        out_a, out_b = a.output(z, t, y), b.output(z, t, y)
    assert b.net.dtype == torch.float32 and not torch.equal(out_a, out_b) and torch.allclose(out_a, out_b, atol=1e-2)
    if (tiny_teacher_dir / "tirt.safetensors").is_file():
        assert torch.equal(a.tirt_logits, b.tirt_logits)


def test_half_copy_errors_are_sentences(tiny_teacher_dir, tmp_path, capsys):
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    (tmp_path / "taken").mkdir()
    assert main([str(tiny_teacher_dir), str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_check_measures_the_copy_on_the_same_noise(tiny_teacher_dir, tmp_path, capsys):
    # Tolerance: float16 rounding of a tiny random network moves its 2-step samples by well under 5% of the image range,
    # but it does move them (a copy compared with itself would give exactly 0 and the check would prove nothing).
    assert main([str(tiny_teacher_dir), str(tmp_path / "half"), "--check", "6", "--check-steps", "2"]) == 0
    check = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["check"]
    assert check["n"] == 6 and check["steps"] == 2 and check["sampler"] == "ddim"
    assert 0 < check["mean_abs_diff"] <= check["max_abs_diff"] < 0.05
    assert check["label_agreement"] is None or 0.0 <= check["label_agreement"] <= 1.0
    assert compare_copy(tiny_teacher_dir, tiny_teacher_dir, 2, 2)["max_abs_diff"] == 0.0  # same weights, same noise


def test_check_errors_are_sentences_and_keep_the_copy(tiny_teacher_dir, tmp_path, capsys):
    assert main([str(tiny_teacher_dir), str(tmp_path / "half"), "--check", "2", "--check-steps", "5000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "steps" in err[0] and (tmp_path / "half").is_dir()


def test_check_samples_a_text_model_on_prompts(tiny_teacher_dir, tmp_path, capsys):
    """A text-conditional copy is checked on prompts (the class prompts by default, `--check-prompt` otherwise); a
    class-conditional model refuses a prompt in one sentence."""
    from helpers import make_tiny_text_teacher

    src = make_tiny_text_teacher(tmp_path / "tiny-text-teacher")
    assert main([str(src), str(tmp_path / "half"), "--check", "4", "--check-steps", "2"]) == 0
    check = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["check"]
    assert check["prompts"][:2] == ["a t-shirt", "trousers"] and 0 < check["mean_abs_diff"] < 0.05
    argv = [str(src), str(tmp_path / "half2"), "--check", "2", "--check-steps", "2", "--check-prompt", "a dark sandal"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["check"]["prompts"] == ["a dark sandal"]
    with pytest.raises(ValueError, match="class-conditional; it takes no prompt"):
        compare_copy(tiny_teacher_dir, tiny_teacher_dir, 2, 2, prompts=["a bag"])
