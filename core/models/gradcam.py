"""GradCAM (Selvaraju et al. 2017) of a classifier: where in the image its predicted class comes from.

`gradcam` works on any classifier at a named layer with a spatial (B, K, h, w) output; `lite_gradcam` on
EfficientNet-Lite at its last feature map, differentiating only the head. `cam_masks` turns maps into the
masks of the most attended pixels (MaskTune's masks, core.mitigation.methods).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.models.classifier import ClassifierAdapter, efficientnet_lite_module


def _cam_from(activation: torch.Tensor, logits: torch.Tensor, class_idx) -> torch.Tensor:
    """GradCAM (Selvaraju et al. 2017): ReLU(sum_k mean(d score / d A_k) * A_k); (B, h, w)."""
    if class_idx is None:
        idx = logits.argmax(-1)
    else:
        idx = torch.as_tensor(class_idx, device=logits.device).long().expand(len(logits))
    score = logits.gather(1, idx[:, None]).sum()
    grad, = torch.autograd.grad(score, activation)
    weights = grad.mean((2, 3), keepdim=True)  # (B, K, 1, 1)
    return F.relu((weights * activation).sum(1)).detach()  # (B, h, w)


# The dashboard shares one cached model between sessions (threads): a forward hook or a requires_grad flag set
# for one map would capture or change another's. Everything that hooks or flags a shared model holds this lock.
MODEL_SURGERY = threading.RLock()


class no_param_grads:  # noqa: N801  (used as a context manager, named like one)
    """Parameters stop requiring grad for a while: the graph then starts at the hooked activation. Holds
    MODEL_SURGERY while it lasts."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        MODEL_SURGERY.acquire()
        self.saved = [(p, p.requires_grad) for p in self.module.parameters()]
        for p, _ in self.saved:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        try:
            for p, flag in self.saved:
                p.requires_grad_(flag)
        finally:
            MODEL_SURGERY.release()


@contextmanager
def forward_hooks(*hooks):
    """`(module, hook)` pairs registered as forward hooks for the length of a block, under MODEL_SURGERY."""
    with MODEL_SURGERY:
        handles = [module.register_forward_hook(fn) for module, fn in hooks]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def gradcam(model, layer: nn.Module | str, x: torch.Tensor, class_idx=None) -> tuple[torch.Tensor, torch.Tensor]:
    """GradCAM of any classifier at `layer` (a module or its name) for inputs x: returns (cams (B, h, w), logits).

    `model` is a ClassifierAdapter or an nn.Module returning logits; `class_idx` is an int or one per
    image, None = each image's predicted class. Only the part after `layer` is differentiated: the
    layer's output is made a leaf that requires grad, and no parameter does. A layer called several
    times in one forward (a shared activation module) yields the CAM of its last call.
    """
    net = model.module if isinstance(model, ClassifierAdapter) else model
    if isinstance(layer, str):
        named = dict(net.named_modules())
        if layer not in named:
            raise ValueError(f"layer {layer!r} is not a module of {type(net).__name__}")
        layer = named[layer]
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (B, 3, H, W), got shape {tuple(x.shape)}")
    captured = {}

    def hook(module, args, out):
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            raise ValueError(f"GradCAM needs a layer with a (B, K, h, w) output; got {type(out).__name__} "
                             f"{tuple(getattr(out, 'shape', ()))}")
        out = out.detach().requires_grad_(True)
        captured["a"] = out
        return out

    with forward_hooks((layer, hook)), no_param_grads(net), torch.enable_grad():
        was_training = net.training
        net.eval()
        try:
            logits = net(x)
            if "a" not in captured:
                raise ValueError("layer was not called in the model's forward pass")
            cams = _cam_from(captured["a"], logits, class_idx)
        finally:
            net.train(was_training)
    return cams, logits.detach()


def lite_gradcam(adapter, x: torch.Tensor, class_idx=None) -> tuple[torch.Tensor, torch.Tensor]:
    """GradCAM of EfficientNet-Lite0 at its last feature map (the conv head after BN and ReLU6): (B, 7, 7) at 224 px.

    The stem and blocks run without autograd; only the pooling and the linear head are differentiated.
    """
    m = efficientnet_lite_module(adapter).eval()
    with torch.no_grad():
        a = m._swish(m._bn0(m._conv_stem(x)))
        for block in m._blocks:
            a = block(a)
        a = m._swish(m._bn1(m._conv_head(a)))  # (B, 1280, h, w)
    a.requires_grad_(True)
    with no_param_grads(m), torch.enable_grad():
        logits = m._fc(m._dropout(m._avg_pooling(a).flatten(1)))
        cams = _cam_from(a, logits, class_idx)
    return cams, logits.detach()


def cam_masks(cams: torch.Tensor, size: int | tuple[int, int], threshold_std: float = 2.0) -> torch.Tensor:
    """Boolean masks (B, H, W) of the most attended pixels: CAM upsampled (bilinear) above its mean + k std."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    up = F.interpolate(cams[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]  # (B, H, W)
    flat = up.flatten(1)
    cut = flat.mean(1) + threshold_std * flat.std(1)
    return (up > cut[:, None, None]) & (up > 0)
