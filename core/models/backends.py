"""Classifiers from other libraries as plain parts (a module, its class names, its preprocessing) that
core.models.classifier wraps in a ClassifierAdapter: timm architectures, Hugging Face image-classification
folders and TorchScript files. Nothing here downloads: timm models are built without pretrained weights,
Hugging Face folders are read with local_files_only.

Preprocessing comes back as a dict of `core.models.classifier.Preprocessing` fields (resize, crop, mean,
std, interpolation), so this module needs nothing from the adapter's.
"""
from __future__ import annotations

import json
import re
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from core.errors import ClassifierLoadError

# PIL's resampling filters by number, as Hugging Face image processors store them.
PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
PREPROCESSING_FIELDS = ("resize", "crop", "mean", "std", "interpolation")


def _interpolation(value) -> str:
    name = PIL_RESAMPLE.get(value, value) if isinstance(value, int) else str(getattr(value, "value", value)).lower()
    return name if name in INTERPOLATIONS else "bilinear"


# --- timm ------------------------------------------------------------------------------------

def timm_model(arch: str, num_classes: int = 1000) -> nn.Module:
    """An untrained timm architecture (its weights come from a checkpoint file)."""
    import timm

    if not timm.is_model(arch):
        raise ClassifierLoadError(f"{arch!r} is not a timm architecture in timm {timm.__version__} (e.g. resnet50, "
                                  "convnext_tiny, vit_small_patch16_224; timm.list_models() names them all)")
    return timm.create_model(arch, pretrained=False, num_classes=num_classes)


def timm_head_name(model: nn.Module) -> str:
    """The name of a timm model's classifier layer (`get_classifier()`), which must be linear."""
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise ClassifierLoadError(f"this timm model's classifier is a {type(head).__name__}, not a linear layer; "
                                  "name the layer whose output are the features with --layer NAME")
    return next(name for name, m in model.named_modules() if m is head)


def timm_preprocessing(model: nn.Module) -> dict:
    """What the architecture's pretrained configuration says about inputs (timm's resolve_data_config)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    crop = int(cfg["input_size"][-1])
    # timm's eval transform: the shorter side to crop / crop_pct, then the centre crop.
    return {"resize": int(crop / cfg.get("crop_pct", 0.875)), "crop": crop, "mean": list(cfg["mean"]),
            "std": list(cfg["std"]), "interpolation": _interpolation(cfg.get("interpolation", "bilinear"))}


# --- Hugging Face ----------------------------------------------------------------------------

def _hf_folder(folder: str | Path) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ClassifierLoadError(f"hf:{folder}: no such folder here. Hugging Face classifiers are read from a "
                                  "local folder (nothing is downloaded): fetch one once with `huggingface-cli "
                                  "download ORG/NAME --local-dir DIR` and pass hf:DIR")
    if not (path / "config.json").is_file():
        raise ClassifierLoadError(f"hf:{folder} is no Hugging Face model folder: it has no config.json")
    return path


def _hf_names(config) -> list[str]:
    """The model's class names (config.id2label); Hugging Face's LABEL_k placeholders become class_k."""
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    return [re.sub(r"^LABEL_(\d+)$", r"class_\1", id2label.get(i, f"class_{i}")) for i in range(config.num_labels)]


def hf_preprocessing(processor) -> dict:
    """A Hugging Face image processor's resize, centre crop and normalisation as Preprocessing fields."""
    def get(size, key):
        return size.get(key) if isinstance(size, dict) else getattr(size, key, None)

    size, crop_size = getattr(processor, "size", None), getattr(processor, "crop_size", None)
    height, shortest = get(size, "height"), get(size, "shortest_edge")
    crop_pct = getattr(processor, "crop_pct", None)
    if shortest and crop_pct:  # ConvNeXt-style: the shorter side to size / crop_pct, then the crop
        resize, crop = int(shortest / crop_pct), int(shortest)
    elif shortest or height:
        resize = int(shortest or height)
        # A fixed height x width is a resize to a square; a square centre crop of the shorter side is that
        # for square images and keeps the aspect ratio for others.
        crop = int(get(crop_size, "height")) if getattr(processor, "do_center_crop", False) and crop_size else resize
    else:
        raise ClassifierLoadError(f"the image processor {type(processor).__name__} gives no size to resize to")
    normalize = getattr(processor, "do_normalize", True)
    mean = list(processor.image_mean) if normalize else [0.0] * 3
    std = list(processor.image_std) if normalize else [1.0] * 3
    return {"resize": resize, "crop": crop, "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "interpolation": _interpolation(getattr(processor, "resample", "bilinear"))}


def hf_model(folder: str | Path) -> tuple[nn.Module, list[str], dict]:
    """(model, class names, preprocessing) of a local Hugging Face image classifier and its image processor."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    path = _hf_folder(folder)
    try:
        model = AutoModelForImageClassification.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except (ValueError, OSError, KeyError) as exc:
        raise ClassifierLoadError(f"hf:{folder} is no image classifier that AutoModelForImageClassification can "
                                  f"load: {str(exc).splitlines()[0]}") from exc
    try:
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    except (ValueError, OSError, KeyError) as exc:
        raise ClassifierLoadError(f"hf:{folder} has no image processor (preprocessor_config.json), so how its "
                                  "images are resized and normalised is unknown; save it beside the model "
                                  "(processor.save_pretrained(FOLDER))") from exc
    return model.eval(), _hf_names(model.config), hf_preprocessing(processor)


def hf_model_from_config(folder: str | Path, num_labels: int) -> nn.Module:
    """The architecture of the Hugging Face model in `folder` with `num_labels` outputs, untrained (its weights
    come from a classifier checkpoint saved from it)."""
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.from_pretrained(_hf_folder(folder), local_files_only=True)
    if config.num_labels != num_labels:
        config.num_labels = num_labels
    return AutoModelForImageClassification.from_config(config, dtype=torch.float32)


def is_hf_folder(folder: Path) -> bool:
    """A folder saved by a Hugging Face model's save_pretrained (its config.json names a model_type)."""
    try:
        return "model_type" in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


# --- TorchScript -----------------------------------------------------------------------------

def is_torchscript(path: str | Path) -> bool:
    """A file written by torch.jit.save: a zip archive with compiled code and constants. A plain torch.save
    archive has neither, so it is never handed to torch.jit.load."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def torchscript_model(path: str | Path) -> torch.jit.ScriptModule:
    if not is_torchscript(path):
        raise ClassifierLoadError(f"{path} is no TorchScript file (one written by torch.jit.save)")
    with warnings.catch_warnings():  # "torch.jit.load is deprecated": files users have still load
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def _sidecar(path: Path, name: str) -> Path | None:
    """`model.classes.txt` beside `model.pt`, else `classes.txt` in its folder."""
    for candidate in (path.with_name(f"{path.stem}.{name}"), path.with_name(name)):
        if candidate.is_file():
            return candidate
    return None


def torchscript_sidecars(path: str | Path) -> tuple[Path | None, dict | None]:
    """The class-names file and the preprocessing (preprocessing.json: resize, crop, mean, std) beside a
    TorchScript file, each None when absent."""
    path = Path(path)
    pre = None
    if (pre_file := _sidecar(path, "preprocessing.json")) is not None:
        try:
            pre = json.loads(pre_file.read_text())
        except ValueError as exc:
            raise ClassifierLoadError(f"{pre_file} is not JSON: {exc}") from exc
        unknown = set(pre) - set(PREPROCESSING_FIELDS) if isinstance(pre, dict) else {"(not an object)"}
        if unknown:
            raise ClassifierLoadError(f"{pre_file} has {sorted(unknown)}; it takes {list(PREPROCESSING_FIELDS)}")
    return _sidecar(path, "classes.txt"), pre


def scripted_linear(module: nn.Module) -> bool:
    """A linear layer inside a TorchScript module (compiled, so no longer an nn.Linear)."""
    return isinstance(module, torch.jit.ScriptModule) and getattr(module, "original_name", None) == "Linear"


def _module_path(node) -> str:
    """The submodule a node of an inlined graph runs in: "body(Sequential).3(Flatten)" -> "body.3"."""
    try:
        return re.sub(r"\([^)]*\)", "", node.getModuleHierarchy())
    except RuntimeError:
        return ""


def _inside(path: str, layer: str) -> bool:
    return path == layer or path.startswith(layer + ".")


def _layer_value(graph, layer: str, read: str):
    """The tensor that flows into (read="input") or out of (read="output") `layer` in an inlined graph."""
    nodes = [n for n in graph.nodes() if _inside(_module_path(n), layer)]

    def tensor(v) -> bool:
        return isinstance(v.type(), torch._C.TensorType)

    if read == "input":
        found = [v for n in nodes for v in n.inputs() if tensor(v) and not _inside(_module_path(v.node()), layer)]
    else:
        found = [v for n in nodes for v in n.outputs()
                 if tensor(v) and any(not _inside(_module_path(u.user), layer) for u in v.uses())]
    if not found:
        raise ClassifierLoadError(f"layer {layer!r} is not called where its {read} can be read (at the top of the "
                                  "TorchScript module's forward, not inside a branch); name another with --layer")
    return found[0] if read == "input" else found[-1]


def torchscript_with_features(module: torch.jit.ScriptModule, layer: str, read: str) -> Callable:
    """A compiled function (module._c, x) -> (z, logits): the module's forward that also returns the tensor
    flowing into (read="input", the head) or out of (read="output", --layer) the submodule `layer`.

    Python hooks never run inside a compiled forward, so the forward's graph is inlined and the value of
    that submodule is added to what it returns (torch._C's graph API; torch is pinned).
    """
    graph = module.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    outputs = list(graph.outputs())
    if len(outputs) != 1 or not isinstance(outputs[0].type(), torch._C.TensorType):
        raise ClassifierLoadError(f"this TorchScript module's forward returns {[str(o.type()) for o in outputs]}; "
                                  "a classifier's forward must return one tensor of logits")
    z, logits = _layer_value(graph, layer, read), outputs[0]
    pair = graph.create("prim::TupleConstruct", [z, logits])
    graph.appendNode(pair)
    pair.output().setType(torch._C.TupleType([z.type(), logits.type()]))
    graph.eraseOutput(0)
    graph.registerOutput(pair.output())
    return torch._C._create_function_from_graph("features_and_logits", graph)
