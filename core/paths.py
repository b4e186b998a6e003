"""Where TExplain Studio keeps things on disk, and the offline environment it runs in."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Everything the set-up builds locally (never committed): Debian photos, WordNet, the converted LM.
ASSETS = Path(os.environ.get("TEXPLAIN_ASSETS", ROOT / ".assets"))
CHECKPOINTS = ROOT / "checkpoints"
SHIPPED_RUNS = CHECKPOINTS / "runs"
USER_RUNS = Path(os.environ.get("TEXPLAIN_RUNS", ROOT / "runs"))

DEFAULT_LM = "smollm2-135m-instruct"  # the language model every command uses unless told otherwise
NLTK_DATA = ASSETS / "nltk_data"
LM_DIR = ASSETS / "models" / DEFAULT_LM
PHOTOS = ASSETS / "photos"
BIRD_PHOTOS = PHOTOS / "birds"
SCENE_PHOTOS = PHOTOS / "scenes"
DEMO_DATA = ASSETS / "demo" / "waterbirds-mini"
FEATURE_CACHE = ASSETS / "cache" / "features"


def user_runs() -> Path:
    """The user's runs folder, read from the environment on every call (tests and the dashboard change it)."""
    return Path(os.environ.get("TEXPLAIN_RUNS") or ROOT / "runs")


def user_classifiers() -> Path:
    """Where classifiers a user makes (mitigation) go: beside their runs, never into the tracked checkpoints/."""
    return user_runs() / "classifiers"


def is_shipped(path: str | Path) -> bool:
    """Whether `path` lies in the tracked checkpoints/ folder, which only a demo rebuild may write into."""
    try:
        Path(path).resolve().relative_to(CHECKPOINTS.resolve())
        return True
    except ValueError:
        return False


def configure_offline() -> None:
    """Point NLTK at the project's data and forbid hub downloads; idempotent."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("NLTK_DATA", str(NLTK_DATA))
    # OpenMP threads that spin while waiting starve each other on a CPU shared with other work (the
    # dashboard beside a job, Ray workers, a test server): a translator training step took 20 s instead of
    # 1 s on 2 busy cores. Sleeping waiters cost little when the CPU is free. Read when torch loads OpenMP,
    # so it only holds for processes that import core before torch (the CLI, the dashboard, jobs).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # nltk reads NLTK_DATA when first imported; importing it here would cost seconds at start-up.
    import sys

    nltk = sys.modules.get("nltk")
    if nltk is not None and str(NLTK_DATA) not in nltk.data.path:
        nltk.data.path.insert(0, str(NLTK_DATA))


configure_offline()
