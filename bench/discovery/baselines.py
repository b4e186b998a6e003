"""The alternatives TExplain is measured against, on the same classifiers and images.

- One sentence per image (B2T's way of describing an image): the first of each image's sampled sentences, so
  it costs nothing more and differs only in how many sentences there are. (`first_sentences`)
- Nearest-caption lookup, no language model: each image gets the captions of its nearest captioned images in
  the classifier's feature space (the general caption world's train split, the captions the general translator
  was trained on), as many as TExplain samples sentences. (`CaptionLookup`)
- A language-free slice finder like Domino: a Gaussian mixture over the classifier's features (PCA) with the
  label and the predicted probability; per class, the component whose images the classifier gets wrong most
  often is the slice, and an image's probability of belonging to it is its score. (`MixtureSlices`)
- Random words: words drawn at random from the run's own vocabulary, per class. (`random_words`)

Words from the first two go through exactly the same flags and group inference as TExplain's sentences
(core.analysis.SpuriousTermScorer, GroupInferrer): only the text differs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def first_sentences(sentences: pd.DataFrame) -> dict[str, list[str]]:
    """image_id -> its first sampled sentence (idx 0), as a one-sentence list."""
    first = sentences.sort_values(["image_id", "idx"]).drop_duplicates("image_id")
    return {str(i): [str(t)] for i, t in zip(first["image_id"], first["text"])}


class CaptionLookup:
    """Captions of the nearest captioned images in feature space (cosine on features standardised with the
    bank's statistics). `fit(bank_features, bank_captions)`, then `sentences(features, k)`."""

    def fit(self, features: np.ndarray, captions: list[list[str]]) -> "CaptionLookup":
        z = np.asarray(features, dtype=np.float64)
        if len(z) != len(captions) or not len(z):
            raise ValueError(f"features has {len(z)} rows for {len(captions)} caption lists")
        self.mean_, self.scale_ = z.mean(0), z.std(0) + 1e-6
        self.bank_ = self._unit(z)
        self.captions_ = captions
        return self

    def _unit(self, z: np.ndarray) -> np.ndarray:
        z = (np.asarray(z, dtype=np.float64) - self.mean_) / self.scale_
        return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12)

    def neighbours(self, features: np.ndarray, k: int) -> np.ndarray:
        sims = self._unit(features) @ self.bank_.T  # (n, bank)
        return np.argsort(-sims, axis=1, kind="stable")[:, :k]

    def sentences(self, features: np.ndarray, k: int) -> list[list[str]]:
        """Per image, one caption from each of its k nearest bank images (the j-th neighbour's caption j mod its
        count, so that the captions vary)."""
        out = []
        for row in self.neighbours(features, k):
            out.append([self.captions_[b][j % len(self.captions_[b])] for j, b in enumerate(row)])
        return out


class MixtureSlices:
    """Domino-like slices: a diagonal Gaussian mixture over [PCA of the features, the one-hot label, the predicted
    probability of class 1], fitted on the discovery split; per class the slice is the component with the
    highest error rate among that class's images (responsibility-weighted, at least `min_mass` images).

    Learned: pca_, mixture_, slice_ (class -> component), error_ (class -> its error rate)."""

    def __init__(self, n_components: int = 8, n_pca: int = 32, label_weight: float = 3.0, seed: int = 0,
                 min_mass: float = 2.0):
        self.n_components, self.n_pca, self.label_weight = n_components, n_pca, label_weight
        self.seed, self.min_mass = seed, min_mass

    def _design(self, z, labels, prob1, fit: bool = False) -> np.ndarray:
        from sklearn.decomposition import PCA

        z = np.asarray(z, dtype=np.float64)
        if fit:
            self.pca_ = PCA(n_components=min(self.n_pca, len(z) - 1, z.shape[1]), random_state=self.seed).fit(z)
            self.pca_scale_ = np.sqrt(self.pca_.explained_variance_) + 1e-9
        x = self.pca_.transform(z) / self.pca_scale_
        y = np.asarray(labels, dtype=int)
        onehot = np.eye(int(y.max()) + 1 if fit else self.n_classes_)[y]
        return np.hstack([x, self.label_weight * onehot, self.label_weight * np.asarray(prob1)[:, None]])

    def fit(self, z, labels, predictions, prob1) -> "MixtureSlices":
        from sklearn.mixture import GaussianMixture

        y, pred = np.asarray(labels, dtype=int), np.asarray(predictions, dtype=int)
        self.n_classes_ = int(y.max()) + 1
        x = self._design(z, y, prob1, fit=True)
        self.mixture_ = GaussianMixture(self.n_components, covariance_type="diag", reg_covar=1e-3,
                                        random_state=self.seed, n_init=2).fit(x)
        r = self.mixture_.predict_proba(x)
        wrong = (y != pred).astype(float)
        self.slice_, self.error_ = {}, {}
        for c in range(self.n_classes_):
            sel = y == c
            mass = r[sel].sum(0)
            rate = np.where(mass >= self.min_mass, (r[sel] * wrong[sel, None]).sum(0) / np.maximum(mass, 1e-12), -1)
            self.slice_[c] = int(np.argmax(rate))
            self.error_[c] = float(rate.max())
        return self

    def score(self, z, labels, prob1) -> np.ndarray:
        """Per image, its probability of lying in its own class's slice."""
        y = np.asarray(labels, dtype=int)
        r = self.mixture_.predict_proba(self._design(z, y, prob1))
        return r[np.arange(len(y)), [self.slice_[int(c)] for c in y]]

    def groups(self, z, labels, prob1) -> np.ndarray:
        """Inferred group per image: 2 * label + (in its class's slice, probability > 0.5)."""
        y = np.asarray(labels, dtype=int)
        return 2 * y + (self.score(z, y, prob1) > 0.5).astype(int)


def random_words(words: pd.DataFrame, class_names: list[str], k: int = 5, seed: int = 0) -> dict[str, list[str]]:
    """class -> k words drawn at random (seeded) from the words the run's sentences use."""
    vocabulary = sorted(words["word"].astype(str).unique())
    rng = np.random.default_rng(seed)
    return {c: [vocabulary[i] for i in rng.choice(len(vocabulary), size=min(k, len(vocabulary)), replace=False)]
            for c in class_names}
