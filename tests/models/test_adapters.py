"""Classifiers as users have them: a timm architecture with a checkpoint, a Hugging Face image classifier in a
folder, a TorchScript file, and the offline EfficientNet-Lite1 and -Lite2 beside Lite0. Each one gives
penultimate features (or a named layer's, pooled), logits, identities a translator can check, reads its classes
in a dataset's, explains an image and round-trips through save_pretrained / from_pretrained. Every model is
made and saved here; nothing is downloaded."""
from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from PIL import Image

from core import cli
from core.engine.config import ExplainConfig
from core.engine.explainer import Explainer
from core.errors import ClassifierLoadError, TranslatorMismatchError
from core.models.classifier import builtin_for, efficientnet_lite, imagenet_class_names, load_classifier
from core.models.label_space import read_in_dataset_classes
from core.models.registry import load_classifier_spec
from core.models.superclass import SuperclassClassifier
from core.models.translator import Translator, TranslatorConfig
from tests import tiny

IMAGE = Image.new("RGB", (48, 36), (40, 90, 200))


def _quiet_jit(fn, *args):
    with warnings.catch_warnings():  # torch.jit.script/trace are deprecated, not gone: users still have such files
        warnings.simplefilter("ignore")
        return fn(*args)


def timm_checkpoint(folder: Path, arch: str = "test_convnext", num_classes: int = 3, suffix: str = ".safetensors",
                    seed: int = 0):
    """A tiny timm model's weights as a user has them (the model itself, for reference)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes).eval()
    path = folder / f"{arch}{suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": model.state_dict()}, path)
    return path, model


def hf_folder(folder: Path, kind: str = "resnet", labels=("waterbird", "cat", "landbird")):
    """A tiny Hugging Face image classifier and its image processor, saved with save_pretrained."""
    from transformers import (ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification, ViTConfig,
                              ViTForImageClassification, ViTImageProcessor)

    torch.manual_seed(0)
    names = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    if kind == "resnet":
        model = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                          layer_type="basic", **names))
        processor = ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875)
    else:
        model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=32, **names))
        processor = ViTImageProcessor(size={"height": 32, "width": 32})
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model.eval()


def torchscript_file(folder: Path, how: str = "script", module: nn.Module | None = None) -> tuple[Path, nn.Module]:
    """A tiny CNN compiled with torch.jit.script (or traced) and saved with torch.jit.save."""
    torch.manual_seed(0)
    module = (module or tiny.TinyNet(n_classes=3)).eval()
    compiled = _quiet_jit(torch.jit.script, module) if how == "script" else \
        _quiet_jit(torch.jit.trace, module, torch.zeros(1, 3, 32, 32))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"net_{how}.pt"
    _quiet_jit(torch.jit.save, compiled, str(path))
    return path, module


def _x(clf) -> torch.Tensor:
    return clf.preprocess(IMAGE)[None]  # (1, 3, crop, crop)


def _refit_head(clf) -> None:
    with torch.no_grad():
        clf.fc.weight.add_(1.0)
    clf.refresh_identity()


def _same_after_reload(clf, folder: Path) -> None:
    clf.save_pretrained(folder, dtype=torch.float32)
    back = load_classifier(folder)
    assert back.identity == clf.identity and back.feature_identity == clf.feature_identity
    assert back.class_names == clf.class_names and back.preprocessing == clf.preprocessing
    with torch.no_grad():
        (z0, l0), (z1, l1) = clf.features_and_logits(_x(clf)), back.features_and_logits(_x(back))
    assert torch.allclose(z0, z1, atol=1e-5) and torch.allclose(l0, l1, atol=1e-5)


# --- the built-in EfficientNet-Lite1 and -Lite2 -----------------------------------------------------------

@pytest.mark.parametrize("arch, crop", [("efficientnet-lite1", 240), ("efficientnet-lite2", 260)])
def test_lite1_and_lite2_are_builtins_at_their_own_resolution(arch, crop, tmp_path):
    clf = load_classifier(arch)
    # The release's resolution, centre-cropped from the shorter side 32 px larger (Lite0: 256 -> 224).
    assert (clf.preprocessing.crop, clf.preprocessing.resize) == (crop, crop + 32)
    assert _x(clf).shape == (1, 3, crop, crop)
    with torch.no_grad():
        z, logits = clf.features_and_logits(_x(clf))
    assert z.shape == (1, clf.feature_dim) == (1, 1280) and logits.shape == (1, 1000)
    assert clf.class_names == imagenet_class_names() and clf.identity.startswith(f"{arch}:")
    assert builtin_for(clf.identity) == arch and builtin_for(f"{clf.identity}>superclasses:x") == arch
    lite0 = load_classifier("efficientnet-lite0")
    assert builtin_for(lite0.identity) == "efficientnet-lite0" and lite0.feature_identity != clf.feature_identity
    # Fine-tuned: a fresh head on the same features; saved and loaded back as Lite1/Lite2, not Lite0.
    tuned = efficientnet_lite(arch, num_classes=2, class_names=["landbird", "waterbird"])
    assert tuned.feature_identity == clf.feature_identity and tuned.identity != clf.identity
    assert builtin_for(tuned.identity) is None
    _same_after_reload(tuned, tmp_path / "tuned")
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["arch"] == arch


# --- timm:ARCH + --checkpoint -------------------------------------------------------------------------------

def test_a_timm_checkpoint_gives_its_pre_logits_logits_and_preprocessing(tmp_path):
    path, ref = timm_checkpoint(tmp_path)
    clf = load_classifier_spec("timm:test_convnext", checkpoint=str(path))
    x = _x(clf)
    with torch.no_grad():
        z, logits = clf.features_and_logits(x)
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)  # (1, D), timm's own pooled pre-logits
    assert torch.allclose(z, want, atol=1e-6) and torch.allclose(logits, ref(x), atol=1e-6)
    assert z.shape == (1, clf.feature_dim) and clf.head_name == "head.fc" and clf.class_names == ["class_0", "class_1",
                                                                                                   "class_2"]
    assert torch.allclose(clf.head(z), logits, atol=1e-6)
    # Preprocessing from the architecture's pretrained configuration: 160 px, crop_pct 0.95, bicubic.
    pre = clf.preprocessing
    assert (pre.crop, pre.resize, pre.interpolation, pre.mean) == (160, 168, "bicubic", [0.5, 0.5, 0.5])
    assert clf.identity.startswith("timm:test_convnext:") and clf.source == str(path)
    # A refit head keeps the features (a translator still fits); other weights are another classifier.
    features = clf.feature_identity
    _refit_head(clf)
    assert clf.feature_identity == features and not clf.identity.endswith(features.rsplit(":", 1)[1])
    _same_after_reload(clf, tmp_path / "saved")


def test_a_timm_checkpoint_of_another_size_or_architecture_says_what_it_expected(tmp_path):
    path, _ = timm_checkpoint(tmp_path, "test_efficientnet", num_classes=5, suffix=".pth")
    clf = load_classifier("timm:test_efficientnet", checkpoint=path)  # a state_dict inside {"state_dict": ...}
    assert len(clf.class_names) == 5 and clf.preprocessing.mean == [0.485, 0.456, 0.406]
    with pytest.raises(ClassifierLoadError, match=r"does not fit timm:test_convnext: .* another architecture"):
        load_classifier("timm:test_convnext", checkpoint=path)
    with pytest.raises(ClassifierLoadError, match="needs its weights: a checkpoint file"):
        load_classifier("timm:test_convnext")
    with pytest.raises(ClassifierLoadError, match="'no_such_net' is not a timm architecture"):
        load_classifier("timm:no_such_net", checkpoint=path)
    with pytest.raises(ClassifierLoadError, match="class_names has 2 names; the classifier 'test_efficientnet' has 5"):
        load_classifier("timm:test_efficientnet", checkpoint=path, class_names=["a", "b"])


def test_layer_names_any_layer_whose_output_is_pooled(tmp_path):
    path, ref = timm_checkpoint(tmp_path)
    clf = load_classifier_spec("timm:test_convnext", checkpoint=str(path), layer="stages.1")
    seen = {}
    ref.stages[1].register_forward_hook(lambda m, a, out: seen.update(out=out))
    with torch.no_grad():
        z, logits = clf.features_and_logits(_x(clf))
        ref(_x(clf))
    assert seen["out"].ndim == 4 and torch.allclose(z, seen["out"].mean((2, 3)), atol=1e-6)  # a feature map: its mean
    assert clf.feature_dim == seen["out"].shape[1] and logits.shape == (1, 3)
    assert clf.identity.startswith("timm:test_convnext@stages.1:") and clf.feature_identity == clf.identity
    with pytest.raises(ClassifierLoadError, match=r"'stage9' is not a layer of timm:test_convnext; its layers: stem"):
        load_classifier_spec("timm:test_convnext", checkpoint=str(path), layer="stage9")
    # A token sequence (a ViT block) gives its first (class) token.
    folder, vit = hf_folder(tmp_path / "vit", "vit")
    clf = load_classifier(f"hf:{folder}", feature_layer="vit.layers.0")
    with torch.no_grad():
        z = clf.features(_x(clf))
        tokens = vit.vit.layers[0](vit.vit.embeddings(_x(clf)))
    tokens = tokens if isinstance(tokens, torch.Tensor) else tokens[0]
    assert torch.allclose(z, tokens[:, 0], atol=1e-5) and clf.feature_dim == 16


# --- hf:FOLDER ----------------------------------------------------------------------------------------------

def test_a_hugging_face_folder_brings_its_classes_and_image_processor(tmp_path):
    folder, ref = hf_folder(tmp_path / "resnet")
    clf = load_classifier_spec(f"hf:{folder}")
    assert clf.class_names == ["waterbird", "cat", "landbird"] and clf.arch == "hf:resnet"
    # ConvNeXt-style processor: shorter side to 32 / 0.875, centre crop 32, its mean and std, bicubic.
    pre = clf.preprocessing
    assert (pre.resize, pre.crop, pre.mean, pre.interpolation) == (36, 32, [0.5] * 3, "bicubic")
    x = _x(clf)
    with torch.no_grad():
        z, logits = clf.features_and_logits(x)
        assert torch.allclose(z, ref.resnet(x).pooler_output.flatten(1), atol=1e-6)  # the head's input
        assert torch.allclose(logits, ref(x).logits, atol=1e-6)
    assert z.shape == (1, clf.feature_dim) == (1, 16)
    assert clf.source == clf.arch_source == str(folder.resolve())
    assert load_classifier(folder).identity == clf.identity  # the folder alone is recognised too
    features = clf.feature_identity
    _refit_head(clf)
    assert clf.feature_identity == features
    _same_after_reload(clf, tmp_path / "refit")  # weights here, architecture rebuilt from the recorded folder
    vit_folder, vit = hf_folder(tmp_path / "vit", "vit", labels=("LABEL_0", "LABEL_1"))
    vit_clf = load_classifier(f"hf:{vit_folder}")
    with torch.no_grad():
        assert torch.allclose(vit_clf.features(_x(vit_clf)), vit.vit(_x(vit_clf)).last_hidden_state[:, 0], atol=1e-5)
    assert vit_clf.class_names == ["class_0", "class_1"]  # Hugging Face's placeholders, as ours


def test_what_is_no_hugging_face_image_classifier_is_refused_with_the_reason(tmp_path, tiny_lm_dir):
    with pytest.raises(ClassifierLoadError, match="no such folder here.*nothing is downloaded"):
        load_classifier("hf:google/vit-base-patch16-224")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClassifierLoadError, match="is no Hugging Face model folder: it has no config.json"):
        load_classifier(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(ClassifierLoadError, match="is no image classifier that AutoModelForImageClassification"):
        load_classifier(f"hf:{tiny_lm_dir}")  # a causal LM
    folder, _ = hf_folder(tmp_path / "noproc")
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ClassifierLoadError, match="has no image processor"):
        load_classifier(f"hf:{folder}")
    with pytest.raises(ClassifierLoadError, match="takes no checkpoint"):
        load_classifier(f"hf:{folder}", checkpoint="x.pt")


# --- TorchScript files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["script", "trace"])
def test_a_torchscript_file_gives_the_input_of_its_last_linear_layer(how, tmp_path):
    path, ref = torchscript_file(tmp_path, how)
    clf = load_classifier_spec(str(path))
    assert clf.backend == "torchscript" and clf.class_names == ["class_0", "class_1", "class_2"]
    assert clf.preprocessing.crop == 224  # ImageNet's defaults without a preprocessing.json
    x = _x(clf)
    with torch.no_grad():
        z, logits = clf.features_and_logits(x)
        assert torch.allclose(z, ref.body(x), atol=1e-6) and torch.allclose(logits, ref(x), atol=1e-6)
    assert clf.feature_dim == 8 and torch.allclose(clf.head(z), logits, atol=1e-6)
    layer = load_classifier(path, feature_layer="body.0")  # a conv layer: its feature map, pooled
    with torch.no_grad():
        assert torch.allclose(layer.features(x), ref.body[0](x).mean((2, 3)), atol=1e-6)
    features = clf.feature_identity
    _refit_head(clf)
    assert clf.feature_identity == features
    _same_after_reload(clf, tmp_path / "refit")


def test_torchscript_sidecars_name_classes_and_preprocessing_and_a_missing_head_asks_for_layer(tmp_path):
    path, _ = torchscript_file(tmp_path)
    (tmp_path / "classes.txt").write_text("landbird\nwaterbird\ncat\n")
    (tmp_path / "net_script.preprocessing.json").write_text(json.dumps({"resize": 40, "crop": 32}))
    clf = load_classifier(path)
    assert clf.class_names == ["landbird", "waterbird", "cat"] and (clf.preprocessing.resize, clf.preprocessing.crop) \
        == (40, 32)
    (tmp_path / "net_script.preprocessing.json").write_text(json.dumps({"size": 40}))
    with pytest.raises(ClassifierLoadError, match=r"has \['size'\]; it takes \['resize', 'crop'"):
        load_classifier(path)
    # A classifier that ends in a 1x1 convolution has no linear head: the error asks for --layer, which works.
    torch.manual_seed(0)
    convnet = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    bare, _ = torchscript_file(tmp_path / "bare", module=convnet)
    with pytest.raises(ClassifierLoadError, match=r"no linear layer .*--layer NAME.*: 0, 1, 2, 3, 4"):
        load_classifier(bare)
    clf = load_classifier(bare, feature_layer="1")
    assert clf.feature_dim == 8 and clf.class_names == [f"class_{i}" for i in range(4)]
    # A pickle is never handed to torch.jit.load (nor unpickled): it is not TorchScript.
    torch.save(convnet.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ClassifierLoadError, match=r"is a file; .*TorchScript file.*torchvision:ARCH --checkpoint"):
        load_classifier(tmp_path / "weights.pt")


# --- in a dataset's classes, explained, picklable --------------------------------------------------------

def _kinds(tmp_path) -> dict:
    names = tmp_path / "names.txt"
    names.write_text("waterbird\ncat\nlandbird\n")
    ts, _ = torchscript_file(tmp_path / "ts")
    (tmp_path / "ts" / "classes.txt").write_text(names.read_text())
    return {"timm": load_classifier_spec("timm:test_convnext", str(timm_checkpoint(tmp_path / "timm")[0]),
                                         class_names=str(names)),
            "hf": load_classifier(f"hf:{hf_folder(tmp_path / 'hf')[0]}"),
            "torchscript": load_classifier(ts)}


def test_each_kind_is_read_in_a_dataset_s_classes_through_the_label_space(tmp_path):
    dataset = SimpleNamespace(class_names=["landbird", "waterbird"], kind="waterbirds")
    for kind, clf in _kinds(tmp_path).items():
        read = read_in_dataset_classes(clf, dataset)
        assert isinstance(read, SuperclassClassifier) and read.label_space.rule == "names", kind
        assert read.class_names == ["landbird", "waterbird", "none of these 2"], kind
        with torch.no_grad():
            (z, fine), (z2, coarse) = clf.features_and_logits(_x(clf)), read.features_and_logits(_x(clf))
        assert torch.equal(z, z2) and torch.allclose(coarse[:, :2], fine[:, [2, 0]]), kind
        assert coarse[0, 2] == fine[0, 1] and read.feature_identity == clf.feature_identity, kind
        # What a decoding worker receives: the preprocessing alone, picklable, the same tensor.
        again = pickle.loads(pickle.dumps(clf.image_transform))
        assert torch.equal(again(IMAGE), clf.preprocess(IMAGE)), kind


def test_each_kind_explains_an_image_with_a_translator_for_it(tmp_path, tiny_lm):
    for kind, clf in {**_kinds(tmp_path), "efficientnet-lite1": load_classifier("efficientnet-lite1")}.items():
        torch.manual_seed(0)
        cfg = TranslatorConfig(feature_dim=clf.feature_dim, hidden_size=tiny_lm.hidden_size, prefix_length=2,
                               mlp_hidden=16, classifier_identity=clf.identity,
                               classifier_feature_identity=clf.feature_identity, lm_identity=tiny_lm.identity)
        explainer = Explainer(clf, Translator(cfg).eval(), tiny_lm,
                              ExplainConfig(sentences_per_image=3, max_new_tokens=4, device="cpu"))
        (e,) = explainer.explain([IMAGE])
        assert e.prediction_name == clf.class_names[e.prediction] and len(e.sentences) == 3, kind
        assert 0 < e.confidence <= 1, kind


# --- the command line and the Ray actors' loading --------------------------------------------------------

def test_the_cli_explains_tiny_waterbirds_with_a_timm_classifier_and_passes_layer(tmp_path, tiny_lm, tiny_lm_dir,
                                                                                  tiny_waterbirds, capsys):
    from core.engine.ray import ModelFiles
    from core.store import Run

    path, _ = timm_checkpoint(tmp_path / "w", "test_efficientnet", num_classes=2)
    clf = load_classifier_spec("timm:test_efficientnet", str(path))
    torch.manual_seed(0)
    tr = Translator(TranslatorConfig(feature_dim=clf.feature_dim, hidden_size=tiny_lm.hidden_size, prefix_length=2,
                                     mlp_hidden=16, classifier_identity=clf.identity,
                                     classifier_feature_identity=clf.feature_identity, lm_identity=tiny_lm.identity))
    tr.save_pretrained(tmp_path / "tr")
    argv = ["explain", "--dataset", str(tiny_waterbirds), "--split", "test", "--classifier", "timm:test_efficientnet",
            "--checkpoint", str(path), "--translator", str(tmp_path / "tr"), "--lm", str(tiny_lm_dir), "--sentences",
            "2", "--max-new-tokens", "4", "--device", "cpu"]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert "complete, 16/16 images" in capsys.readouterr().out
    run = Run.open(tmp_path / "run")
    assert run.manifest["models"]["classifier_identity"] == clf.identity and len(run.images()) == 16
    # --layer reaches the classifier: its features are another layer's, which this translator was not made for.
    assert cli.main([*argv, "--out", str(tmp_path / "run2"), "--layer", "blocks.0"]) == 2
    assert "gives 16-d features; this translator was trained on 256-d" in capsys.readouterr().err
    (tmp_path / "blank.txt").write_text("\n")
    assert cli.main([*argv, "--out", str(tmp_path / "run3"), "--class-names", str(tmp_path / "blank.txt")]) == 2
    assert "holds no names (one a line)" in capsys.readouterr().err
    with pytest.raises(ClassifierLoadError, match="--class-names FILE goes with a torchvision:ARCH, timm:ARCH"):
        load_classifier_spec("efficientnet-lite0", class_names=str(path))
    # What each Ray actor loads from the command line's names (ModelFiles): the same classifier, with --layer.
    files = ModelFiles(classifier="timm:test_efficientnet", translator=str(tmp_path / "tr"), lm=str(tiny_lm_dir),
                       checkpoint=str(path))
    assert files.load()[0].identity == clf.identity
    with pytest.raises(TranslatorMismatchError, match="gives 16-d features"):
        ModelFiles(**{**files.__dict__, "layer": "blocks.0"}).load()
