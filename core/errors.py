"""The project's own errors, in one hierarchy, so every entry point tells "your input is wrong" from a bug.

Every error TExplain raises about what it was given (a dataset, an image, a checkpoint, a run folder, a
job) is a `TExplainError`, and also what it was before this hierarchy existed (a ValueError or a
RuntimeError), so `except ValueError` in callers keeps working. The CLI prints any of them as one line
and exits 2; the dashboard shows the message. Each is re-exported by the module that raises it
(`from core.store import RunStoreError` still works). This module imports nothing.
"""
from __future__ import annotations


class TExplainError(Exception):
    """Something the user gave TExplain is wrong; the message names it and says what to do."""


class DatasetError(TExplainError, ValueError):
    """A dataset or caption file cannot be read; the message names the file and what is wrong."""


class ImageDecodeError(DatasetError):
    """An image file cannot be decoded safely (unreadable, truncated, too large, too small)."""


class DemoWorldError(TExplainError, RuntimeError):
    """The demo world cannot be built (its source photos are missing)."""


class ClassifierLoadError(TExplainError, ValueError):
    """A classifier spec or checkpoint cannot be loaded; the message says what was expected."""


class LanguageModelError(TExplainError, ValueError):
    """A language model folder or file cannot be loaded (e.g. a pickled checkpoint that is refused)."""


class TranslatorMismatchError(TExplainError, ValueError):
    """A translator was loaded against a classifier or language model it was not trained for."""


class TrainStateError(TExplainError, ValueError):
    """A translator's train_state.pt cannot be resumed (another run's, or unreadable)."""


class RunStoreError(TExplainError, RuntimeError):
    """A run folder is missing, incomplete, damaged or not a run."""


class RunMismatchError(RunStoreError):
    """A run folder holds a run of other data, models or settings than the one asked to resume."""


class RunLockedError(RunStoreError):
    """Another live process is writing the run folder."""


class JobError(TExplainError, RuntimeError):
    """A job could not be started, stopped or resumed; the message says why."""


class AssetError(TExplainError, RuntimeError):
    """An offline asset could not be prepared."""


class StampWorldError(TExplainError, RuntimeError):
    """A world built from the tuxpaint stamps (the general caption world, the mini ImageNet-9) cannot be built."""


class RayClusterError(TExplainError, RuntimeError):
    """A Ray cluster cannot be reached or started, or cannot run the job (Ray missing, too few GPUs)."""
