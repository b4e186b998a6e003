"""TExplain Studio's engine: explain what an image classifier's features encode, in words.

    from core import load_classifier, load_language_model, Translator, explain_dataset, open_dataset

Everything is importable without Streamlit; the dashboard only calls into this package.
"""
from __future__ import annotations

import importlib

from core import paths as _paths  # noqa: F401  (sets the offline environment first)

# Public API, imported lazily so that `import core` stays fast for the dashboard and the CLI.
_API = {
    "load_classifier": "core.models.classifier",
    "ClassifierAdapter": "core.models.classifier",
    "load_language_model": "core.models.lm",
    "LanguageModel": "core.models.lm",
    "Translator": "core.translator",
    "TranslatorConfig": "core.translator",
    "TranslatorMismatchError": "core.translator",
    "train_translator": "core.train",
    "TrainConfig": "core.train",
    "explain_dataset": "core.explain",
    "explain_images": "core.explain",
    "ExplainConfig": "core.explain",
    "WordExtractor": "core.words",
    "Run": "core.store",
    "list_runs": "core.store",
    "open_dataset": "core.data",
    "resolve_device": "core.device",
    "TExplainError": "core.errors",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        module = importlib.import_module(_API[name])
        return getattr(module, "resolve" if name == "resolve_device" else name)
    raise AttributeError(f"module 'core' has no attribute {name!r}")
