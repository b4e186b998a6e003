"""A scene gate: what a linear read of the classifier's own features rules out, the translator does not say.

A translator trained on a closed caption world hedges towards the scenes it knows: behind a photo it never saw
it writes "a calm lake" in one sentence of ten, and over 16 sentences most images without water get a water
word. A scene gate holds one logistic head per scene kind (water, grass, sky, ...) on the same features the
translator reads, fitted on images whose kinds are known. Where a kind's probability for an image is under the
gate's threshold, the image's sentences that name one of the kind's words are drawn again
(core.engine.sampling.sample_accepted): the explanation becomes the translator's sentences given that they do not
name what the features rule out. The gate never adds a word; it only takes away hedges the features do not back.

    gate = fit_scene_gate(train_z, {"water": shows_water, ...}, {"water": {"lake", ...}, ...}, threshold=0.3,
                          classifier_identity=classifier.identity,
                          groups=photo_of_each_image)  # each head's strength: the one that reads unseen photos best
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


# A gate reads photos it never saw, so its strength is chosen on folds that hold whole photos out, over a grid that
# reaches further down than the probes': fitted on ~130 photos, weaker heads read new ones better.
GROUPED_CS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
GROUPED_FOLDS = 5


def linear_probe(scoring: str, seed: int = 0, cv=3, Cs=(1e-3, 1e-2, 1e-1)):
    """Standardised features into an L2 logistic regression whose strength cross-validation (`cv`: a fold count or
    the folds) picks by `scoring` among `Cs` on the training images: the reader of a scene gate and of
    core.evaluation.openworld's probes."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=list(Cs), cv=cv, scoring=scoring,
                                                                l1_ratios=(0,), max_iter=3000, random_state=seed,
                                                                use_legacy_attributes=False))


def photo_folds(y: np.ndarray, groups: np.ndarray, n_splits: int = GROUPED_FOLDS) -> list:
    """GroupKFold folds that keep each group (a scene photo) on one side, less those whose held-out side shows only
    one class (AUC is undefined there); empty where fewer than 2 groups."""
    from sklearn.model_selection import GroupKFold

    y, groups = np.asarray(y, bool), np.asarray(groups)
    n = min(n_splits, len(np.unique(groups)))
    if n < 2:
        return []
    return [(tr, te) for tr, te in GroupKFold(n).split(y, y, groups) if 0 < y[te].sum() < len(te)]


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
                   threshold: float, classifier_identity: str = "", seed: int = 0, source: str = "",
                   groups: np.ndarray | None = None) -> SceneGate:
    """One logistic head per kind of `shown` (kind -> does each of the images of `z` (N, D) show it), fitted as
    `linear_probe` fits (AUC picks the strength); with `groups` (the photo each image shows), the strength is the
    one that reads held-out photos best (photo_folds, GROUPED_CS). A kind that every image shows, or none, is left
    out (never gated)."""
    z = np.asarray(z, dtype=np.float64)
    if missing := sorted(set(shown) - set(words)):
        raise ValueError(f"no words for the kinds {missing}: a gate blocks a kind by its words")
    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(z):
            raise ValueError(f"{len(groups)} photo groups for {len(z)} feature rows")
    kinds, coefs, intercepts, scaler = [], [], [], None
    photos = len(np.unique(groups)) if groups is not None else 0
    fit = {"images": int(len(z)), "source": source, "kinds": {},
           "strength": (f"AUC over {min(GROUPED_FOLDS, photos)} folds of held-out photos ({photos} photos)"
                        if groups is not None else "AUC over 3 folds")}
    for kind, y in shown.items():
        y = np.asarray(y, bool)
        if len(y) != len(z):
            raise ValueError(f"{len(y)} labels of {kind!r} for {len(z)} feature rows")
        if y.all() or not y.any():
            fit["kinds"][kind] = {"skipped": f"all {len(y)} images {'show' if y.any() else 'lack'} it"}
            continue
        folds = photo_folds(y, groups) if groups is not None else []
        # Too few photos show the kind (or lack it) to hold some out twice: the images' 3 folds choose instead.
        probe = (linear_probe("roc_auc", seed, cv=folds, Cs=GROUPED_CS) if len(folds) >= 2 else
                 linear_probe("roc_auc", seed)).fit(z, y)
        scaler, head = probe[0], probe[-1]
        kinds.append(kind)
        coefs.append(np.ravel(head.coef_))
        intercepts.append(float(np.ravel(head.intercept_)[0]))
        fit["kinds"][kind] = {"images_with": int(y.sum()), "C": float(np.ravel(head.C_)[0])}
        if groups is not None:
            fit["kinds"][kind]["photos_with"] = int(len(np.unique(groups[y])))
            if len(folds) < 2:
                fit["kinds"][kind]["strength"] = "AUC over 3 folds: too few photos to hold some out"
    if not kinds:
        raise ValueError("a scene gate needs at least one kind that some images show and others do not")
    # StandardScaler is fitted on z alone, so every head shares one mean and scale.
    return SceneGate(tuple(kinds), {k: frozenset(words[k]) for k in kinds},
                     torch.tensor(scaler.mean_, dtype=torch.float32), torch.tensor(scaler.scale_, dtype=torch.float32),
                     torch.tensor(np.stack(coefs), dtype=torch.float32),
                     torch.tensor(intercepts, dtype=torch.float32), float(threshold), classifier_identity, fit)
