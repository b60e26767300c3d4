"""`python -m analysis.train_classifier`: train the feature classifier and write the reference statistics.

Writes assets/classifier/model.safetensors, info.json (test accuracy) and reference.safetensors: the test set's
feature mean and covariance (Fréchet distance), a feature subset (KID, precision/recall) and per-class diversity,
so evaluation needs no dataset. Also measures the real-train-vs-test floor of every metric.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from analysis.classifier import CLASSIFIER_DIR, FashionClassifier, classify, save_classifier
from demo.core.data import BatchSampler, load_fashion_mnist, to_model_space


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.train_classifier")
    p.add_argument("--epochs", type=float, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(CLASSIFIER_DIR))
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    data = BatchSampler(xtr, ytr, args.batch_size, seed=args.seed, flip=True)  # a classifier may be flip-invariant
    model = FashionClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    iters = int(args.epochs * len(xtr) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=iters)
    t0 = time.time()
    model.train()
    for step in range(iters):
        x, y = data.batch(step)
        # Light augmentation: random shifts of up to 2 pixels make features robust to generator jitter.
        g = torch.Generator().manual_seed(step)
        dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(model(x), y, label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0:
            print(
                json.dumps({"step": step, "of": iters, "loss": round(float(loss), 4), "s": round(time.time() - t0, 1)}),
                flush=True,
            )
    model.eval()
    test_images = to_model_space(xte)
    test_feats, test_probs = classify(model, test_images)
    acc = float((test_probs.argmax(1) == torch.as_tensor(yte)).float().mean())
    info = {
        "test_accuracy": acc,
        "epochs": args.epochs,
        "train_seconds": round(time.time() - t0, 1),
        "feature_dim": test_feats.shape[1],
    }
    from pathlib import Path

    from analysis.metrics import write_reference

    out = Path(args.out)
    save_classifier(model, out, info)
    train_feats, train_probs = classify(model, to_model_space(xtr))
    info["floor"] = write_reference(
        out / "reference.safetensors", test_feats, torch.as_tensor(yte), train_feats, torch.as_tensor(ytr), train_probs
    )
    save_classifier(model, out, info)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
