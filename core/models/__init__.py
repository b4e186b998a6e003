"""Model adapters: image classifiers (features + head) and frozen causal language models."""
from core.models.classifier import ClassifierAdapter, load_classifier
from core.models.lm import LanguageModel, load_language_model

__all__ = ["ClassifierAdapter", "LanguageModel", "load_classifier", "load_language_model"]
