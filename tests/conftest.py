import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import core  # noqa: E402,F401  (offline environment before any transformers import)
from tests import tiny  # noqa: E402

CAPTIONS = {0: "a bird near water by the lake", 1: "a bird in the green forest with tree and grass"}
# The tiny LM is "pretrained" to continue a hard prompt of 3 marker tokens with the matching caption,
# as a real LM continues "A photo of a lake:"; a translator must find a soft prefix that does the same.
PROMPTED = [f"{m} {m} {m} {c}" for m, c in (("<w>", CAPTIONS[0]), ("<f>", CAPTIONS[1]))]


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory):
    return tiny.save_tiny_lm(tmp_path_factory.mktemp("tiny_lm") / "lm", train_on=PROMPTED)


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_dir):
    from core.models.lm import load_language_model

    return load_language_model(tiny_lm_dir)


@pytest.fixture
def tiny_classifier():
    import torch

    from core.models.classifier import Preprocessing, from_module

    torch.manual_seed(0)
    return from_module(tiny.TinyNet(), ["landbird", "waterbird"], preprocessing=Preprocessing(resize=32, crop=32),
                       name="tinynet")


@pytest.fixture
def tiny_waterbirds(tmp_path):
    return tiny.make_waterbirds(tmp_path / "wb")
