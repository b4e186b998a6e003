"""A scene gate: what a linear read of the classifier's own features rules out, the translator does not say.

A translator trained on a closed caption world hedges towards the scenes it knows: behind a photo it never saw
it writes "a calm lake" in one sentence of ten, and over 16 sentences most images without water get a water
word. A scene gate holds one logistic head per scene kind (water, grass, sky, ...) on the same features the
translator reads, fitted on images whose kinds are known. Where a kind's probability for an image is under the
gate's threshold, the image's sentences that name one of the kind's words are drawn again
(core.engine.sampling.sample_accepted): the explanation becomes the translator's sentences given that they do not
name what the features rule out. The gate never adds a word; it only takes away hedges the features do not back.

    gate = fit_scene_gate(train_z, {"water": shows_water, ...}, {"water": {"lake", ...}, ...}, threshold=0.2,
                          classifier_identity=classifier.identity)
    gate.save(translator_folder)        # scene_gate.json + scene_gate.safetensors; Translator.from_pretrained loads it
    gate.blocked(z)                     # per image, the kinds its sentences may not name
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

GATE_CONFIG, GATE_WEIGHTS = "scene_gate.json", "scene_gate.safetensors"


def linear_probe(scoring: str, seed: int = 0):
    """Standardised features into an L2 logistic regression whose strength 3-fold cross-validation picks (by
    `scoring`) on the training images: the reader of a scene gate and of core.evaluation.openworld's probes."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[1e-3, 1e-2, 1e-1], cv=3, scoring=scoring,
                                                                l1_ratios=(0,), max_iter=3000, random_state=seed,
                                                                use_legacy_attributes=False))


@dataclass
class SceneGate:
    kinds: tuple[str, ...]
    words: dict[str, frozenset[str]]  # kind -> the lemmas that name it
    mean: torch.Tensor  # (D,) the scaler's
    scale: torch.Tensor  # (D,)
    coef: torch.Tensor  # (K, D) one head per kind
    intercept: torch.Tensor  # (K,)
    threshold: float
    classifier_identity: str = ""
    fit: dict = field(default_factory=dict)  # how it was fitted: images per kind, C, source

    def __post_init__(self):
        k, d = len(self.kinds), int(self.mean.shape[0])
        if self.coef.shape != (k, d) or self.intercept.shape != (k,) or self.scale.shape != (d,):
            raise ValueError(f"a scene gate of {k} kinds on {d} features needs coef ({k}, {d}) and intercept ({k},); "
                             f"got {tuple(self.coef.shape)} and {tuple(self.intercept.shape)}")
        if set(self.kinds) - set(self.words):
            raise ValueError(f"scene gate kinds without words: {sorted(set(self.kinds) - set(self.words))}")
        if not 0 <= self.threshold < 1:
            raise ValueError(f"a scene gate's threshold is a probability in [0, 1), got {self.threshold}")

    @property
    def feature_dim(self) -> int:
        return int(self.mean.shape[0])

    def probabilities(self, z: torch.Tensor) -> torch.Tensor:
        """Features (B, D) -> each kind's probability (B, K)."""
        if z.ndim != 2 or z.shape[1] != self.feature_dim:
            raise ValueError(f"the scene gate reads ({self.feature_dim},) features per image, got {tuple(z.shape)}")
        x = (z.float().cpu() - self.mean) / self.scale
        return torch.sigmoid(x @ self.coef.T + self.intercept)

    def blocked(self, z: torch.Tensor) -> list[frozenset[str]]:
        """Per image, the kinds whose probability is under the threshold: its sentences may not name them."""
        low = (self.probabilities(z) < self.threshold).tolist()
        return [frozenset(k for k, b in zip(self.kinds, row) if b) for row in low]

    def names_blocked(self, words: Iterable[str], blocked: frozenset[str]) -> bool:
        """Does a sentence with these words (lemmas) name a blocked kind?"""
        words = set(words)
        return any(words & self.words[k] for k in blocked)

    def describe(self) -> dict:
        """What a run's manifest records of the gate that shaped its sentences."""
        return {"threshold": self.threshold, "kinds": list(self.kinds), "sha256": self.digest()}

    def digest(self) -> str:
        h = hashlib.sha256(json.dumps(self._config(), sort_keys=True).encode())
        for t in (self.mean, self.scale, self.coef, self.intercept):
            h.update(t.float().numpy().tobytes())
        return h.hexdigest()[:16]

    def _config(self) -> dict:
        return {"kinds": list(self.kinds), "words": {k: sorted(v) for k, v in self.words.items()},
                "threshold": self.threshold, "feature_dim": self.feature_dim,
                "classifier_identity": self.classifier_identity, "fit": self.fit}

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"mean": self.mean.contiguous(), "scale": self.scale.contiguous(), "coef": self.coef.contiguous(),
                   "intercept": self.intercept.contiguous()}, str(folder / GATE_WEIGHTS))
        (folder / GATE_CONFIG).write_text(json.dumps(self._config(), indent=1) + "\n")
        return folder / GATE_CONFIG

    @classmethod
    def load(cls, folder: str | Path) -> "SceneGate":
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            raw = json.loads((folder / GATE_CONFIG).read_text())
            t = load_file(str(folder / GATE_WEIGHTS))
            gate = cls(tuple(raw["kinds"]), {k: frozenset(v) for k, v in raw["words"].items()}, t["mean"].float(),
                       t["scale"].float(), t["coef"].float(), t["intercept"].float(), float(raw["threshold"]),
                       raw.get("classifier_identity", ""), raw.get("fit") or {})
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{folder / GATE_CONFIG} is not a readable scene gate: {exc}") from exc
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"{folder / GATE_WEIGHTS} could not be read as safetensors: {exc}") from exc
        if raw.get("feature_dim") not in (None, gate.feature_dim):
            raise ValueError(f"{folder / GATE_CONFIG} says {raw['feature_dim']} features, its weights "
                             f"{gate.feature_dim}")
        return gate


def has_gate(folder: str | Path) -> bool:
    return (Path(folder) / GATE_CONFIG).exists()


def fit_scene_gate(z: np.ndarray, shown: Mapping[str, np.ndarray], words: Mapping[str, Iterable[str]],
                   threshold: float, classifier_identity: str = "", seed: int = 0, source: str = "") -> SceneGate:
    """One logistic head per kind of `shown` (kind -> does each of the images of `z` (N, D) show it), fitted as
    `linear_probe` fits (AUC picks the strength); a kind that every image shows, or none, is left out (never
    gated)."""
    z = np.asarray(z, dtype=np.float64)
    if missing := sorted(set(shown) - set(words)):
        raise ValueError(f"no words for the kinds {missing}: a gate blocks a kind by its words")
    kinds, coefs, intercepts, fit, scaler = [], [], [], {"images": int(len(z)), "source": source, "kinds": {}}, None
    for kind, y in shown.items():
        y = np.asarray(y, bool)
        if len(y) != len(z):
            raise ValueError(f"{len(y)} labels of {kind!r} for {len(z)} feature rows")
        if y.all() or not y.any():
            fit["kinds"][kind] = {"skipped": f"all {len(y)} images {'show' if y.any() else 'lack'} it"}
            continue
        probe = linear_probe("roc_auc", seed).fit(z, y)
        scaler, head = probe[0], probe[-1]
        kinds.append(kind)
        coefs.append(np.ravel(head.coef_))
        intercepts.append(float(np.ravel(head.intercept_)[0]))
        fit["kinds"][kind] = {"images_with": int(y.sum()), "C": float(np.ravel(head.C_)[0])}
    if not kinds:
        raise ValueError("a scene gate needs at least one kind that some images show and others do not")
    # StandardScaler is fitted on z alone, so every head shares one mean and scale.
    return SceneGate(tuple(kinds), {k: frozenset(words[k]) for k in kinds},
                     torch.tensor(scaler.mean_, dtype=torch.float32), torch.tensor(scaler.scale_, dtype=torch.float32),
                     torch.tensor(np.stack(coefs), dtype=torch.float32),
                     torch.tensor(intercepts, dtype=torch.float32), float(threshold), classifier_identity, fit)
