"""The translator: maps a frozen classifier's feature vector to a soft prefix for a frozen LM.

Two mappers, as in ClipCap: an MLP (features -> k prefix embeddings) and a small transformer
that refines k learned query tokens conditioned on the projected features. A checkpoint is a
folder (`config.json` + `model.safetensors`) that records which classifier and which language
model it was trained for; loading it against other models is refused with both names.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from core.errors import TranslatorMismatchError  # noqa: F401  (re-exported: callers catch it from here)
from core.models.classifier import current_umask

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


@dataclass
class TranslatorConfig:
    feature_dim: int  # size of the classifier's feature vector z
    hidden_size: int  # size of the LM's input embeddings
    prefix_length: int = 10  # k soft tokens handed to the LM
    mapper: str = "mlp"  # "mlp" or "transformer"
    mlp_hidden: int = 1536  # width of the MLP's hidden layer (the prototype's choice)
    num_layers: int = 4  # transformer mapper depth
    num_heads: int = 8  # transformer mapper heads; must divide hidden_size
    dropout: float = 0.0
    normalize_features: bool = True  # z-score features with training statistics (better words)
    classifier_identity: str = ""  # identity string of the classifier adapter
    classifier_feature_identity: str = ""  # its feature extractor's identity (any head on it fits)
    classifier_name: str = ""
    lm_identity: str = ""  # identity string of the language model
    lm_name: str = ""
    training: dict = field(default_factory=dict)  # data, settings and metrics, for provenance
    format_version: int = FORMAT_VERSION
    # An aligned translator: a linear map from another classifier's `input_dim`-d features onto the features
    # this translator's mapper reads, which are those of the `base` translator (a folder; its weights are read
    # from there and checked against `base_sha256`). Built in minutes by core.engine.align.
    input_dim: int | None = None
    base: str = ""
    base_sha256: str = ""

    def __post_init__(self):
        if self.mapper not in ("mlp", "transformer"):
            raise ValueError(f"mapper must be 'mlp' or 'transformer', got {self.mapper!r}")
        if self.prefix_length < 1:
            raise ValueError(f"prefix_length must be >= 1, got {self.prefix_length}")
        if self.mapper == "transformer" and self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide hidden_size={self.hidden_size}")


class MLPMapper(nn.Module):
    def __init__(self, cfg: TranslatorConfig):
        super().__init__()
        self.k, self.d = cfg.prefix_length, cfg.hidden_size
        self.net = nn.Sequential(
            nn.Linear(cfg.feature_dim, cfg.mlp_hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.mlp_hidden, cfg.prefix_length * cfg.hidden_size),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], self.k, self.d)  # (B, k, d)


class TransformerMapper(nn.Module):
    def __init__(self, cfg: TranslatorConfig):
        super().__init__()
        self.k, self.d = cfg.prefix_length, cfg.hidden_size
        self.project = nn.Linear(cfg.feature_dim, cfg.prefix_length * cfg.hidden_size)
        self.queries = nn.Parameter(torch.randn(cfg.prefix_length, cfg.hidden_size) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.hidden_size, cfg.num_heads, 4 * cfg.hidden_size,
                                           cfg.dropout, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], self.k, self.d)  # (B, k, d)
        q = self.queries.unsqueeze(0).expand(z.shape[0], -1, -1)  # (B, k, d)
        # Only the learned query positions come out: they read the projected features through attention.
        return self.encoder(torch.cat([x, q], dim=1))[:, self.k:]  # (B, k, d)


class Translator(nn.Module):
    """z (B, feature_dim) -> prefix embeddings (B, prefix_length, hidden_size)."""

    def __init__(self, config: TranslatorConfig):
        super().__init__()
        self.config = config
        self.mapper = MLPMapper(config) if config.mapper == "mlp" else TransformerMapper(config)
        self.input_map = nn.Linear(config.input_dim, config.feature_dim) if config.input_dim else None
        self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
        self.register_buffer("feature_std", torch.ones(config.feature_dim))
        self.source = ""  # the folder it was loaded from, for provenance
        self.gate = None  # a SceneGate (core.models.gate) saved beside it, if any

    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Remember the training features' mean and spread for z-scoring."""
        self.feature_mean.copy_(features.float().mean(0))
        self.feature_std.copy_(features.float().std(0).clamp_min(1e-4))

    @property
    def input_dim(self) -> int:
        """The size of the features it takes: the classifier's (an aligned translator maps them first)."""
        return self.config.input_dim or self.config.feature_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.input_dim:
            raise ValueError(f"features has shape {tuple(z.shape)}; this translator expects (batch, {self.input_dim})")
        z = z.to(self.feature_mean.dtype)
        if self.input_map is not None:
            z = self.input_map(z)  # (B, feature_dim): the base classifier's feature space
        if self.config.normalize_features:
            z = (z - self.feature_mean) / self.feature_std
        return self.mapper(z)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- checkpoint format -------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path, dtype: torch.dtype = torch.float32) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
                 for k, v in self.state_dict().items()
                 if not self.config.base or k.startswith("input_map.")}  # an aligned one keeps its map only
        # Written to temporary names first so an interrupted save never leaves a half checkpoint.
        tmp_w, tmp_c = folder / (WEIGHTS_NAME + ".tmp"), folder / (CONFIG_NAME + ".tmp")
        save_file(state, str(tmp_w), metadata={"format": "pt", "texplain_translator": str(FORMAT_VERSION)})
        os.chmod(tmp_w, 0o666 & ~current_umask())  # safetensors writes 0600; a shared folder must be readable
        tmp_c.write_text(json.dumps(asdict(self.config), indent=2))
        tmp_w.replace(folder / WEIGHTS_NAME)
        tmp_c.replace(folder / CONFIG_NAME)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, classifier=None, lm=None, strict_identity: bool = True,
                        map_location: str | torch.device = "cpu") -> "Translator":
        """Load a translator folder; refuse it if `classifier` or `lm` is not the one it was trained for."""
        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not cfg_path.exists() or not w_path.exists():
            raise FileNotFoundError(f"{folder} is not a translator checkpoint: it needs {CONFIG_NAME} and "
                                    f"{WEIGHTS_NAME}")
        try:
            raw = json.loads(cfg_path.read_text())
            config = TranslatorConfig(**raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{cfg_path} is not a translator config: {exc}") from exc
        if strict_identity:
            check_compatible(config, classifier, lm)
        model = cls(config)
        try:
            state = load_file(str(w_path), device=str(map_location))
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"{w_path} could not be read as safetensors: {exc}") from exc
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        if config.base:
            state = {**_base_state(folder, config, map_location), **state}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{w_path} does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
        model.source = str(folder)
        model.gate = _load_gate(folder, model)
        return model.eval()


def _load_gate(folder: Path, model: "Translator"):
    """The scene gate saved in the translator's folder, checked against the features it reads (None if none)."""
    from core.models.gate import SceneGate, has_gate

    if not has_gate(folder):
        return None
    gate = SceneGate.load(folder)
    if gate.feature_dim != model.input_dim:
        raise ValueError(f"{folder}'s scene gate reads {gate.feature_dim} features; its translator takes "
                         f"{model.input_dim}")
    wanted = model.config.classifier_identity
    if gate.classifier_identity and wanted and gate.classifier_identity != wanted:
        raise ValueError(f"{folder}'s scene gate was fitted on {gate.classifier_identity!r}, its translator on "
                         f"{wanted!r}")
    return gate


def weights_sha256(folder: str | Path) -> str:
    import hashlib

    return hashlib.sha256((Path(folder) / WEIGHTS_NAME).read_bytes()).hexdigest()[:16]


def resolve_base(folder: Path, base: str) -> Path:
    """An aligned translator's base folder: absolute, relative to the repository, or to the aligned one."""
    from core import paths

    p = Path(base)
    for candidate in (p,) if p.is_absolute() else (paths.ROOT / p, folder / p):
        if (candidate / CONFIG_NAME).exists():
            return candidate
    raise TranslatorMismatchError(f"{folder} is aligned onto the translator {base}, which is not here; rebuild it "
                                  "with `texplain train --classifier ... --fast`")


def _base_state(folder: Path, config: TranslatorConfig, map_location) -> dict:
    base = resolve_base(folder, config.base)
    if config.base_sha256 and weights_sha256(base) != config.base_sha256:
        raise TranslatorMismatchError(f"{folder} was aligned onto other weights of {base} than those there now (the "
                                      "base translator was retrained); rebuild it with `texplain train --classifier "
                                      "... --fast`")
    state = load_file(str(base / WEIGHTS_NAME), device=str(map_location))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items() if not k.startswith("input_map.")}


def check_compatible(config: TranslatorConfig, classifier=None, lm=None) -> None:
    if classifier is not None:
        expected = config.input_dim or config.feature_dim
        if classifier.feature_dim != expected:
            raise TranslatorMismatchError(
                f"classifier {classifier.name!r} gives {classifier.feature_dim}-d features; this translator was "
                f"trained on {expected}-d features from {config.classifier_name!r}")
        same_features = bool(config.classifier_feature_identity) and \
            getattr(classifier, "feature_identity", None) == config.classifier_feature_identity
        if config.classifier_identity and classifier.identity != config.classifier_identity and not same_features:
            raise TranslatorMismatchError(
                f"this translator was trained for classifier {config.classifier_identity!r} "
                f"({config.classifier_name}), not for {classifier.identity!r}, and its feature extractor "
                f"differs too")
    if lm is not None:
        if lm.hidden_size != config.hidden_size:
            raise TranslatorMismatchError(
                f"language model {lm.name!r} has hidden size {lm.hidden_size}; this translator writes "
                f"{config.hidden_size}-d prefixes for {config.lm_name!r}")
        if config.lm_identity and lm.identity != config.lm_identity:
            raise TranslatorMismatchError(
                f"this translator was trained for language model {config.lm_identity!r}, not for {lm.identity!r}")
