"""Captions for Fashion-MNIST that say more than the class: attributes measured from the pixels (issue 26).

Each image gets three attributes, measured on its object pixels (intensity > 0.1 of the range):
- **brightness** — their mean intensity: *dark* / *light*;
- **width** — their horizontal spread (4 standard deviations of the column, intensity-weighted): *narrow* / *wide*;
- **texture** — the mean absolute difference between neighbouring object pixels: *plain* / *patterned*.
An attribute's word is used only when the image lies in the lower or upper third of its class for that measure
(thresholds fitted per class on the training split, `AttributeThresholds`), so "a dark coat" means darker than most
coats. A caption is "a {brightness} {width} {texture} {class}" ("an" before a vowel, no article for trousers) with
any attribute left out: during training each word
an image qualifies for is kept with probability 1/2, so "a sandal" and "a light narrow sandal" are both prompts the
model has seen. The grammar has 10 × 3³ = 270 captions; `all_captions()` lists them, `caption_index` finds one.

`clip_tokenizer()` builds a CLIP tokenizer offline whose byte-level BPE has learned every caption word as one token
(any other text still tokenizes, character by character).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

CLASS_WORDS = ("t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
ATTRIBUTES = ("brightness", "width", "texture")
WORDS = (("dark", "light"), ("narrow", "wide"), ("plain", "patterned"))  # (low third, high third) per attribute
OBJECT_LEVEL = 0.1  # intensity in [0, 1] above which a pixel belongs to the object
NONE, LOW, HIGH = 0, 1, 2  # an attribute's code: no word, the low word, the high word
PLURAL = {"trousers"}  # class words that take no article: "dark trousers", "trousers"


def measure_attributes(images) -> np.ndarray:
    """[N, 3] float: (brightness, width, texture) of grey images, uint8 [N, H, W] or float [N, 1, H, W] in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images.detach().cpu()
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    else:
        x = (x.float().clamp(-1, 1) + 1) / 2
    x = x.reshape(len(x), *x.shape[-2:])  # [N, H, W]
    mask = x > OBJECT_LEVEL
    count = mask.sum(dim=(1, 2)).clamp(min=1)
    brightness = (x * mask).sum(dim=(1, 2)) / count
    mass = (x * mask).sum(dim=1)  # [N, W]: the object's intensity per column
    col = torch.arange(x.shape[-1], dtype=torch.float32)
    total = mass.sum(dim=1).clamp(min=1e-6)
    mean = (mass * col).sum(dim=1) / total
    width = 4 * ((mass * (col - mean[:, None]) ** 2).sum(dim=1) / total).sqrt() / x.shape[-1]  # ≈ the span, as a fraction
    dh = (x[:, :, 1:] - x[:, :, :-1]).abs() * (mask[:, :, 1:] & mask[:, :, :-1])
    dv = (x[:, 1:, :] - x[:, :-1, :]).abs() * (mask[:, 1:, :] & mask[:, :-1, :])
    pairs = ((mask[:, :, 1:] & mask[:, :, :-1]).sum(dim=(1, 2)) + (mask[:, 1:, :] & mask[:, :-1, :]).sum(dim=(1, 2))).clamp(min=1)
    texture = (dh.sum(dim=(1, 2)) + dv.sum(dim=(1, 2))) / pairs
    return torch.stack([brightness, width, texture], dim=1).numpy().astype(np.float64)


@dataclass(frozen=True)
class AttributeThresholds:
    """Per class and attribute, the values below which the low word and above which the high word applies."""

    low: np.ndarray  # [num_classes, 3]
    high: np.ndarray  # [num_classes, 3]

    @classmethod
    def fit(cls, values: np.ndarray, labels: np.ndarray, num_classes: int = 10) -> AttributeThresholds:
        """Tertiles of each measure within each class."""
        labels = np.asarray(labels)
        low, high = np.zeros((num_classes, 3)), np.zeros((num_classes, 3))
        for k in range(num_classes):
            v = values[labels == k]
            if len(v) == 0:
                raise ValueError(f"no images of class {k} to fit the attribute thresholds on")
            low[k], high[k] = np.quantile(v, 1 / 3, axis=0), np.quantile(v, 2 / 3, axis=0)
        return cls(low, high)

    def codes(self, values: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """[N, 3] int: LOW below the class's lower tertile, HIGH above its upper one, NONE between."""
        labels = np.asarray(labels)
        lo, hi = self.low[labels], self.high[labels]
        return np.where(values < lo, LOW, np.where(values > hi, HIGH, NONE)).astype(np.int64)

    def to_dict(self) -> dict:
        return {"low": self.low.round(6).tolist(), "high": self.high.round(6).tolist(), "attributes": list(ATTRIBUTES)}

    @classmethod
    def from_dict(cls, d: dict) -> AttributeThresholds:
        return cls(np.asarray(d["low"], dtype=np.float64), np.asarray(d["high"], dtype=np.float64))


def caption(label: int, codes=(NONE, NONE, NONE)) -> str:
    """'a dark wide sandal', 'an ankle boot', 'light trousers': the class word after the words of the attributes whose
    code is not NONE."""
    words = [*(WORDS[a][int(c) - 1] for a, c in enumerate(codes) if int(c) != NONE), CLASS_WORDS[int(label)]]
    if CLASS_WORDS[int(label)] in PLURAL:
        return " ".join(words)
    return " ".join(["an" if words[0][0] in "aeiou" else "a", *words])


CLASS_PROMPTS = tuple(caption(k) for k in range(len(CLASS_WORDS)))  # "a t-shirt", …, "an ankle boot": prompt k is class k


def caption_index(label, codes) -> torch.Tensor:
    """The index in `all_captions()` of each (class, attribute codes): label·27 + codes in base 3."""
    label, codes = torch.as_tensor(label).long(), torch.as_tensor(codes).long()
    return label * 27 + codes[..., 0] * 9 + codes[..., 1] * 3 + codes[..., 2]


def all_captions() -> list[str]:
    """Every caption of the grammar, in `caption_index` order (270 for 10 classes)."""
    return [caption(k, (a, b, c)) for k in range(len(CLASS_WORDS)) for a in range(3) for b in range(3) for c in range(3)]


def drop_words(codes: torch.Tensor, generator: torch.Generator, keep: float = 0.5) -> torch.Tensor:
    """Each attribute word an image qualifies for kept with probability `keep` (the rest become NONE)."""
    kept = torch.rand(codes.shape, generator=generator) < keep
    return torch.where(kept, codes, torch.zeros_like(codes))


# ---- a CLIP tokenizer whose BPE knows the caption words ----
def _bpe_merges(words: list[str], max_merges: int = 10_000) -> list[tuple[str, str]]:
    """Byte-pair merges learned on `words` (each once) until every word is one symbol (Sennrich et al. 2016)."""
    seqs = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in words}
    merges = []
    while len(merges) < max_merges:
        pairs = Counter(p for s in seqs.values() for p in zip(s, s[1:]))
        if not pairs:
            return merges
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]  # most frequent; ties by the pair itself
        merges.append(best)
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = tuple(out)
    return merges


def clip_tokenizer(texts=None, model_max_length: int = 16):
    """A `transformers.CLIPTokenizer` built offline: CLIP's start/end tokens, every byte-level character (plain and
    word-final) and BPE merges learned on the words of `texts` (default: the caption grammar)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    plain = CLIPTokenizer(vocab={"<|startoftext|>": 0, "<|endoftext|>": 1}, merges=[], model_max_length=model_max_length)
    split = plain.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    words = sorted({w for t in (texts or all_captions()) for w, _ in split(t.lower())})
    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [*chars, *(c + "</w>" for c in chars)]:
        vocab.setdefault(token, len(vocab))
    merges = _bpe_merges(words)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=model_max_length)


class CaptionBatches:
    """Image batches whose labels are caption indices (into `all_captions()`): a text teacher's training data for
    distillation. Wraps batches with class labels (`demo.core.data.BatchSampler`); each image's attributes are measured
    from its pixels against `thresholds`, and its attribute words are kept with probability 1/2 from a generator
    seeded by the step, so batches are reproducible and a resumed run sees the same captions."""

    def __init__(self, data, thresholds: AttributeThresholds, seed: int = 0):
        self.data = data
        self.thresholds = thresholds
        self.seed = seed

    @classmethod
    def of(cls, data, record: dict | None = None) -> CaptionBatches:
        """Over `data`, with the thresholds a text teacher's card recorded (`training.captions`), else fitted on the
        data's own images."""
        if record and "low" in record and "high" in record:
            thresholds = AttributeThresholds.from_dict(record)
        else:
            thresholds = AttributeThresholds.fit(measure_attributes(data.x), data.y.numpy())
        return cls(data, thresholds, getattr(data, "seed", 0))

    @property
    def x(self):
        return self.data.x

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.batch(step)
        codes = torch.as_tensor(self.thresholds.codes(measure_attributes(x), y.numpy()))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step + 7)
        return x, caption_index(y, drop_words(codes, g))
