"""The fast path (core.engine.align): a new classifier borrows a trained translator through a linear map of its
features, fitted on images without captions; saved as a small aligned translator that reads its base's weights."""
import numpy as np
import pytest
import torch
from torch import nn

from core.data import load_rgb
from core.engine.align import align_translator, fit_feature_map
from core.models.classifier import Preprocessing, current_umask, from_module
from core.models.translator import Translator, TranslatorConfig, TranslatorMismatchError


def test_the_map_recovers_a_linear_change_of_basis_and_says_how_well():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g)
    true_w, true_b = torch.randn(4, 6, generator=g), torch.randn(4, generator=g)
    w, b, info = fit_feature_map(x, x @ true_w.T + true_b)
    assert torch.allclose(w, true_w, atol=1e-2) and torch.allclose(b, true_b, atol=1e-2)
    assert info["r2_held_out"] > 0.999 and info["ridge"] == 1e-3
    noise = torch.randn(300, 4, generator=g)
    assert fit_feature_map(x, noise)[2]["r2_held_out"] < 0.2  # unrelated features: a low R², said as such
    with pytest.raises(ValueError, match="at least 20 images"):
        fit_feature_map(x[:10], noise[:10])


class Rotated(nn.Module):
    """Another classifier seeing the same images: the base network's features in another basis (and size)."""

    def __init__(self, base: nn.Module, width: int = 8, out: int = 12):
        super().__init__()
        self.body = base.body
        self.mix = nn.Linear(width, out)
        self.fc = nn.Linear(out, 2)

    def forward(self, x):
        return self.fc(self.mix(self.body(x)))


def test_an_aligned_translator_writes_what_the_base_writes_and_saves_only_its_map(tmp_path, tiny_lm,
                                                                                   tiny_classifier, tiny_waterbirds):
    torch.manual_seed(1)
    pre = Preprocessing(resize=32, crop=32)
    new = from_module(Rotated(tiny_classifier.module), ["landbird", "waterbird"], preprocessing=pre, name="rotated")
    base = Translator(TranslatorConfig(feature_dim=tiny_classifier.feature_dim, hidden_size=tiny_lm.hidden_size,
                                       prefix_length=2, mlp_hidden=16, classifier_identity=tiny_classifier.identity,
                                       classifier_name="tinynet", lm_identity=tiny_lm.identity))
    base.set_feature_stats(torch.randn(50, tiny_classifier.feature_dim))
    base.save_pretrained(tmp_path / "base")
    base = Translator.from_pretrained(tmp_path / "base", tiny_classifier, tiny_lm)
    images = sorted(str(p) for p in (tiny_waterbirds / "img").glob("*.png"))
    # Many more images than the tiny world has: noisy copies, so the map has rows enough to fit.
    rng = np.random.default_rng(0)
    from PIL import Image

    many = []
    for i in range(60):
        src = np.asarray(load_rgb(images[i % len(images)])).astype(float)
        f = tmp_path / f"noisy{i}.png"
        Image.fromarray(np.clip(src + rng.normal(0, 40, src.shape), 0, 255).astype(np.uint8)).save(f)
        many.append(str(f))
    aligned = align_translator(new, tiny_classifier, base, many, load_rgb, show_progress=False)
    assert aligned.config.input_dim == 12 and aligned.config.training["r2_held_out"] > 0.99
    with torch.no_grad():
        x = torch.stack([new.preprocess(load_rgb(p)) for p in images])
        ours = aligned(new.features(x))
        theirs = base(tiny_classifier.features(x))
    assert torch.allclose(ours, theirs, atol=1e-2 * theirs.abs().max().item())  # ridge shrinks a little
    folder = aligned.save_pretrained(tmp_path / "aligned")
    # Readable as any file the user writes (safetensors alone writes 0600).
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert (folder / "model.safetensors").stat().st_size < (tmp_path / "base" / "model.safetensors").stat().st_size
    again = Translator.from_pretrained(folder, new, tiny_lm)
    with torch.no_grad():
        assert torch.allclose(again(new.features(x)), ours, atol=1e-5)
    with pytest.raises(TranslatorMismatchError, match="12-d features"):
        Translator.from_pretrained(folder, tiny_classifier, tiny_lm)  # its input is the new classifier's
    # The base retrained in place: the map no longer fits it, and loading says what to do.
    torch.manual_seed(5)
    Translator(base.config).save_pretrained(tmp_path / "base")
    with pytest.raises(TranslatorMismatchError, match="--fast"):
        Translator.from_pretrained(folder, new, tiny_lm)
