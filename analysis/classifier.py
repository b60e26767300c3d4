"""A small Fashion-MNIST CNN whose penultimate features define the project's sample metrics.

Metrics computed in these features are *classifier-feature* metrics (Fréchet distance, KID, precision/recall);
they are not FID, which uses Inception-v3 features on natural images.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from demo.core.paths import CLASSIFIER_DIR

FEATURE_DIM = 128


class FashionClassifier(nn.Module):
    """Three conv stages (28→14→7→3) and a 128-d feature layer; input [B,1,28,28] in [-1, 1]."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.body = nn.Sequential(block(1, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.feat = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * width * 3 * 3, FEATURE_DIM), nn.ReLU(inplace=True))
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feat(self.body(x))  # [B, 128]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # [B, num_classes] logits


def load_classifier(folder: str | Path = CLASSIFIER_DIR, device="cpu") -> FashionClassifier:
    folder = Path(folder)
    path = folder / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"The feature classifier is missing at {path}: run `python -m analysis.train_classifier`.")
    model = FashionClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def classify(model: FashionClassifier, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N,128], probabilities [N,10]) of images [N,1,28,28] in [-1, 1].

    Images of another size or with colour channels (a latent model's decoded output) are fitted to 28x28 grey first.
    """
    from demo.core.latent import to_classifier_space

    if images.shape[1:] != (1, 28, 28):
        images = to_classifier_space(images)
    device = next(model.parameters()).device
    feats, probs = [], []
    for lo in range(0, len(images), batch_size):
        x = images[lo : lo + batch_size].to(device).float()
        f = model.features(x)
        feats.append(f.cpu())
        probs.append(F.softmax(model.head(f), dim=1).cpu())
    return torch.cat(feats), torch.cat(probs)


def save_classifier(model: FashionClassifier, folder: Path, info: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "info.json").write_text(json.dumps(info, indent=2) + "\n")
