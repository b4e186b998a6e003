"""Training packs: features computed where the images are, the translator trained elsewhere from one file."""
import json
import shutil

import pandas as pd
import pytest
import torch

from tests import tiny
from tests.conftest import CAPTIONS


@pytest.fixture
def caption_table(tiny_waterbirds):
    meta = pd.read_csv(tiny_waterbirds / "metadata.csv")
    split = meta["split"].map({0: "train", 1: "val", 2: "test"})
    return pd.DataFrame({"path": [str(tiny_waterbirds / f) for f in meta["img_filename"]],
                         "caption": [CAPTIONS[int(p)] for p in meta["place"]], "split": split})


def _pack(tmp_path, tiny_classifier, tiny_lm, caption_table):
    from core.data import load_rgb
    from core.engine.train import caption_pairs_compact, save_training_pack

    compact = caption_pairs_compact(tiny_classifier, caption_table, load_rgb, ("identity", "flip"), "tiny")
    pack = save_training_pack(tmp_path / "pack.safetensors", tiny_classifier, tiny_lm, compact, {"captions": "tiny"})
    return pack, compact


def test_pack_round_trip(tmp_path, tiny_classifier, tiny_lm, caption_table):
    from core.data import load_rgb
    from core.engine.train import caption_pairs, load_training_pack

    path, (images, index, train_caps, val_z, val_caps) = _pack(tmp_path, tiny_classifier, tiny_lm, caption_table)
    pack = load_training_pack(path)
    assert pack.train_captions == train_caps and pack.val_captions == val_caps
    assert pack.train_features.shape == (len(train_caps), 2, tiny_classifier.feature_dim)
    # float16 on disk: the features come back to within half precision
    torch.testing.assert_close(pack.train_features, images[index], rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(pack.val_features, val_z, rtol=2e-3, atol=2e-3)
    assert pack.source.identity == tiny_classifier.identity and pack.lm["identity"] == tiny_lm.identity
    assert pack.data_info == {"captions": "tiny"}
    # the expanded form is what caption_pairs gives
    expanded = caption_pairs(tiny_classifier, caption_table, load_rgb, ("identity", "flip"), "tiny")
    assert torch.equal(expanded[0], images[index]) and expanded[1] == train_caps


def test_train_from_pack_with_a_copy_of_the_lm(tmp_path, tiny_classifier, tiny_lm, tiny_lm_dir, caption_table):
    """A copy of the same LM elsewhere (another identity) is accepted by content; the translator it trains
    loads beside the original LM and classifier."""
    from core.engine.config import TrainConfig
    from core.engine.train import load_training_pack, train_translator_from_pack
    from core.models.lm import load_language_model
    from core.models.translator import Translator

    path, _ = _pack(tmp_path, tiny_classifier, tiny_lm, caption_table)
    copy = load_language_model(shutil.copytree(tiny_lm_dir, tmp_path / "elsewhere" / "copied-lm"))
    assert copy.identity != tiny_lm.identity
    cfg = TrainConfig(epochs=1, batch_size=4, max_steps=3, warmup_steps=1, device="cpu")
    train_translator_from_pack(load_training_pack(path), copy, tmp_path / "out", cfg, show_progress=False)
    tr = Translator.from_pretrained(tmp_path / "out" / "best", tiny_classifier, tiny_lm)
    assert tr.config.lm_identity == tiny_lm.identity and tr.config.training["captions"] == "tiny"


def test_pack_refuses_another_lm_and_foreign_files(tmp_path, tiny_classifier, tiny_lm, caption_table):
    from safetensors.torch import save_file

    from core.engine.train import load_training_pack, train_translator_from_pack
    from core.models.lm import load_language_model

    path, _ = _pack(tmp_path, tiny_classifier, tiny_lm, caption_table)
    other = load_language_model(tiny.save_tiny_lm(tmp_path / "other-lm", seed=1))
    with pytest.raises(ValueError, match="not the one the pack was made for"):
        train_translator_from_pack(load_training_pack(path), other, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    save_file({"features": torch.zeros(2, 3)}, str(tmp_path / "features.safetensors"))
    with pytest.raises(ValueError, match="not a training pack"):
        load_training_pack(tmp_path / "features.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a training pack"):
        load_training_pack(tmp_path / "junk.safetensors")


def test_cli_trains_from_a_pack(tmp_path, tiny_classifier, tiny_lm, tiny_lm_dir, caption_table, capsys):
    from core.cli import main

    path, _ = _pack(tmp_path, tiny_classifier, tiny_lm, caption_table)
    out = tmp_path / "cli-out"
    assert main(["train", "--pack", str(path), "--lm", str(tiny_lm_dir), "--out", str(out), "--epochs", "1",
                 "--max-steps", "2", "--batch-size", "4", "--device", "cpu"]) == 0
    assert (out / "best" / "config.json").exists()
    # A second stage from the first's weights; one of another shape is refused with the reason.
    common = ["train", "--pack", str(path), "--lm", str(tiny_lm_dir), "--epochs", "1", "--max-steps", "1",
              "--batch-size", "4", "--device", "cpu", "--init-from", str(out / "best")]
    assert main([*common, "--out", str(tmp_path / "stage2"), "--dropout", "0.1"]) == 0
    stage2 = json.loads((tmp_path / "stage2" / "best" / "config.json").read_text())
    assert stage2["dropout"] == 0.1 and stage2["training"]["settings"]["dropout"] == 0.1
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "stage2b"), "--prefix-length", "3"]) != 0
    assert "another shape" in capsys.readouterr().err
    assert main(["train", "--out", str(out)]) != 0
    assert "name a --classifier" in capsys.readouterr().err
