"""TExplain Studio: explain in words what an image classifier's features encode, flag what it should not rely on.

    from core import Explainer, ExplainConfig, Translator, load_classifier, load_language_model

    classifier, lm = load_classifier("efficientnet-lite0"), load_language_model()
    translator = Translator.from_pretrained("checkpoints/translators/general", classifier, lm)
    for e in Explainer(classifier, translator, lm, ExplainConfig(sentences_per_image=32)).explain(images):
        print(e.prediction_name, e.top_words(5))

    run = explain_dataset(open_dataset("data/waterbirds"), classifier, translator, lm, "runs/wb")  # stored, resumable
    report = build_report(run)

Everything is importable without Streamlit; the dashboard only calls into this package. Layers, from the
bottom: paths, errors, device; models, data, store; engine; analysis; evaluation, mitigation, report, jobs;
demo; cli (docs/architecture.md).
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
    "Translator": "core.models.translator",
    "TranslatorConfig": "core.models.translator",
    "TranslatorMismatchError": "core.models.translator",
    "ExplainConfig": "core.engine.config",
    "TrainConfig": "core.engine.config",
    "FinetuneConfig": "core.engine.config",
    "Explainer": "core.engine.explainer",
    "Explanation": "core.engine.explainer",
    "explain_dataset": "core.engine.pipeline",
    "train_translator": "core.engine.train",
    "WordExtractor": "core.engine.words",
    "Run": "core.store",
    "list_runs": "core.store",
    "open_dataset": "core.data",
    "SpuriousTermScorer": "core.analysis",
    "GroupInferrer": "core.analysis",
    "build_report": "core.report",
    "resolve_device": "core.device",
    "TExplainError": "core.errors",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        module = importlib.import_module(_API[name])
        return getattr(module, "resolve" if name == "resolve_device" else name)
    raise AttributeError(f"module 'core' has no attribute {name!r}")
