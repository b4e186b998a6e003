"""Tiny, locally saved models and datasets for fast engine tests (no hub, no assets needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from PIL import Image

WORDS = ("a bird near water by the lake . bird in the green forest with tree and grass "
         "photo of small duck crow on <w> <f>").split()


def save_tiny_lm(folder: Path, train_on: list[str] | None = None, steps: int = 300, seed: int = 0) -> Path:
    """A 2-layer Llama with a word-level tokenizer, optionally trained briefly on `train_on` sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")  # joins word-level tokens with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      eos_token_id=1, pad_token_id=1, bos_token_id=1, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    if train_on:
        # A "pretrained" LM: it knows the captions' language, so a translator only has to choose.
        ids = [tok(s).input_ids + [1] for s in train_on]
        T = max(map(len, ids))
        x = torch.tensor([i + [1] * (T - len(i)) for i in ids])
        labels = torch.tensor([i + [-100] * (T - len(i)) for i in ids])
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(steps):
            loss = model(input_ids=x, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


class TinyNet(nn.Module):
    """A small CNN whose penultimate features separate blue-ish from green-ish images."""

    def __init__(self, n_classes: int = 2, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.fc(self.body(x))


def make_waterbirds(root: Path, n_per_group: int = 4, size: int = 32, seed: int = 0) -> Path:
    """A Waterbirds-format folder of flat-colour images: blue scenes are water, green ones land."""
    rng = np.random.default_rng(seed)
    rows = []
    (root / "img").mkdir(parents=True, exist_ok=True)
    i = 0
    for split_code in (0, 1, 2):
        for y in (0, 1):
            for place in (0, 1):
                for _ in range(n_per_group):
                    base = np.array([40, 160, 60] if place == 0 else [40, 90, 200], dtype=float)
                    arr = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                    arr[size // 3: size // 2, size // 3: size // 2] = 250 if y else 10  # the "bird"
                    name = f"img/{i:04d}.png"
                    Image.fromarray(arr).save(root / name)
                    rows.append({"img_id": i, "img_filename": name, "y": y, "split": split_code, "place": place,
                                 "place_filename": "synthetic"})
                    i += 1
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root
