"""Mirror agreement on known inputs: images facing the class mean's way, its mirror's way, and half and half."""

import torch

from analysis.mirror import class_means, main, mirror_agreement


def _shoes(n: int, seed: int = 0) -> torch.Tensor:
    """Asymmetric 'shoes': a bright block on the left, a dim one on the right, plus noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.2
    x[..., 10:20, 2:14] += 1.0
    x[..., 14:20, 14:26] += 0.4
    return x


def test_agreement_is_one_for_the_data_zero_for_its_mirror_and_half_for_either_way():
    real = _shoes(64)
    labels = torch.zeros(64, dtype=torch.long)
    means = class_means(real, labels, num_classes=1)
    assert mirror_agreement(real, labels, means) == [1.0]
    assert mirror_agreement(real.flip(-1), labels, means) == [0.0]
    half = torch.cat([_shoes(50, seed=1), _shoes(50, seed=2).flip(-1)])
    assert mirror_agreement(half, torch.zeros(100, dtype=torch.long), means) == [0.5]
    # Brightness scale and offset do not matter; a class without images gives None.
    assert mirror_agreement(3 * real - 1, labels, means) == [1.0]
    means2 = torch.cat([means, means.flip(-1)])
    assert mirror_agreement(real, labels, means2) == [1.0, None]
    assert mirror_agreement(real, torch.ones(64, dtype=torch.long), means2) == [None, 0.0]


def test_cli_rejects_bad_classes_in_one_sentence(capsys, tiny_teacher_dir):
    for bad in ("sandal", "5,12"):
        assert main(["--model", str(tiny_teacher_dir), "--class-label", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: class label must be") and err.count("\n") == 0
