"""From a name or a run to models: the one place that knows where classifiers and translators are kept.

    classifier = load_classifier_spec("timm:convnext_tiny", checkpoint="convnext.safetensors", layer="stages.2")
    sources = run_model_sources(run.manifest)          # to explain new images the way a run did
    adapter, folder, note = resolve_run_classifier(run.manifest)   # the run's own classifier, checked

A run's manifest records its classifier by name, identity and (newer runs) source; the lookups below try,
in order: the recorded source (a folder, a TorchScript file, or a torchvision/timm weights file read into
the architecture the run's classifier identity names), the name as a folder, the shipped checkpoint
folders (checkpoints/classifiers: "demo-erm" is classifiers/erm), then any classifier folder under the
shipped ones or your own (runs/classifiers) whose config names it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import paths
from core.errors import ClassifierLoadError

CLASSIFIERS_DIR = paths.CHECKPOINTS / "classifiers"
TRANSLATORS_DIR = paths.CHECKPOINTS / "translators"


def load_classifier_spec(spec: str, checkpoint: str | None = None, layer: str | None = None,
                         class_names: str | None = None, random_weights: bool = False):
    """The classifier a command line names (--classifier SPEC: a built-in name, a checkpoint folder,
    torchvision:ARCH, timm:ARCH, hf:FOLDER or a TorchScript file), with --checkpoint FILE (the weights of a
    torchvision or timm architecture), --layer NAME (the layer whose pooled output are the features) and
    --class-names FILE (one name a line, for weights that name no classes). A torchvision or timm architecture
    without its weights is refused: untrained, its explanations would mean nothing; `random_weights=True`
    (--random-weights) takes a torchvision one with random weights all the same, for a smoke test."""
    from core.models.backends import is_torchscript
    from core.models.classifier import load_classifier, read_class_names

    kwargs = {}
    kind = str(spec).partition(":")[0]
    if kind in ("torchvision", "timm") and checkpoint is None and not (random_weights and kind == "torchvision"):
        hint = (" (or --random-weights for a smoke test with untrained weights)" if kind == "torchvision" else
                "; nothing is downloaded")
        raise ClassifierLoadError(f"--classifier {spec} needs its trained weights: --checkpoint FILE (a .pt/.pth "
                                  f"state dict or .safetensors){hint}. Without them the network is untrained and its "
                                  "explanations describe random features")
    if random_weights and (kind != "torchvision" or checkpoint is not None):
        raise ClassifierLoadError(f"--random-weights goes with --classifier torchvision:ARCH and no --checkpoint; "
                                  f"got --classifier {spec}" + (f" --checkpoint {checkpoint}" if checkpoint else ""))
    if checkpoint is not None:
        if kind not in ("torchvision", "timm"):
            raise ClassifierLoadError(f"--checkpoint FILE goes with --classifier torchvision:ARCH or timm:ARCH (e.g. "
                                      f"torchvision:resnet50); got --classifier {spec}, which brings its own weights")
        kwargs["checkpoint"] = checkpoint
    if class_names is not None:
        if kind not in ("torchvision", "timm", "torchscript") and not is_torchscript(spec):
            raise ClassifierLoadError(f"--class-names FILE goes with a torchvision:ARCH, timm:ARCH or TorchScript "
                                      f"classifier; --classifier {spec} names its classes itself")
        kwargs["class_names"] = read_class_names(class_names)
    if layer:
        kwargs["feature_layer"] = layer
    return load_classifier(spec, **kwargs)


def checkpoint_folders(kind: str) -> list[Path]:
    """Shipped checkpoint folders of `kind` ("classifiers" or "translators") that hold a config.json."""
    base = {"classifiers": CLASSIFIERS_DIR, "translators": TRANSLATORS_DIR}.get(kind)
    if base is None:
        raise ValueError(f"kind must be 'classifiers' or 'translators', got {kind!r}")
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if (p / "config.json").is_file())


def as_checkpoint_folder(value: Any) -> Path | None:
    """`value` as a checkpoint folder (one holding config.json; relative paths from the repository), or None."""
    if not value or not isinstance(value, (str, Path)):
        return None
    p = Path(value).expanduser()
    p = p if p.is_absolute() else paths.ROOT / p
    return p if (p / "config.json").is_file() else None


def _config_name(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return None


def as_checkpoint_file(value: Any) -> Path | None:
    """`value` as a weights or TorchScript file (relative paths from the repository), or None."""
    if not value or not isinstance(value, (str, Path)):
        return None
    p = Path(value).expanduser()
    p = p if p.is_absolute() else paths.ROOT / p
    return p if p.is_file() else None


def classifier_candidates(manifest: dict) -> list[Path]:
    """Checkpoint folders, and the file the run recorded as its classifier's source (a torchvision or timm
    checkpoint, a TorchScript file), that may hold the classifier a run was made with, most likely first (see
    the module docstring); none is loaded, so none is checked yet."""
    models = manifest.get("models") or {}
    name = str(models.get("classifier") or "")
    source = models.get("classifier_source")
    found = [f for f in (as_checkpoint_folder(source), as_checkpoint_file(source), as_checkpoint_folder(name)) if f]
    if name:
        for short in (name.removeprefix("demo-"), name):
            if (CLASSIFIERS_DIR / short / "config.json").is_file():
                found.append(CLASSIFIERS_DIR / short)
        for root in (CLASSIFIERS_DIR, paths.user_classifiers()):
            for cfg in sorted(root.glob("**/config.json")) if root.is_dir() else []:
                if _config_name(cfg.parent) == name:
                    found.append(cfg.parent)
    return list(dict.fromkeys(p.resolve() for p in found))


def builtin_refusal(identity: str | None) -> str | None:
    """Why a run of `identity` cannot be mitigated because it is the unmodified built-in classifier, or None."""
    from core.models.classifier import builtin_for

    if not (builtin := builtin_for(identity)):
        return None
    return (f"this run's classifier is the unmodified built-in {builtin!r}"
            + (" read in the dataset's classes" if ">" in str(identity) else "") + ", which has no last layer of "
            "the dataset's classes to refit. Fine-tune one on the dataset first (`texplain finetune "
            "--dataset FOLDER --out FOLDER`), explain its val and test splits with a translator for it, and "
            "mitigate that run")


def relative_to_repo(path: str | Path) -> str:
    """A path as printed to a user: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(paths.ROOT))
    except ValueError:
        return str(path)


def spec_from_identity(identity: str | None) -> tuple[str, str | None] | None:
    """(load_classifier spec, feature layer) of the architecture an identity names ("timm:convnext_tiny:ab12",
    "resnet50@layer3:cd34"), for weights kept in a bare checkpoint file; None when it names no torchvision or
    timm architecture."""
    base = str(identity or "").split(">")[0].rpartition(":")[0]
    arch, _, layer = base.partition("@")
    if arch.startswith("timm:"):
        return arch, layer or None
    try:
        import torchvision.models as tvm
    except ImportError:
        return None
    return (f"torchvision:{arch}", layer or None) if arch in tvm.list_models() else None


def load_candidate(path: Path, manifest: dict):
    """The classifier in a candidate of `classifier_candidates`: a checkpoint folder, a TorchScript file, or a
    torchvision/timm weights file read into the architecture the run's classifier identity names."""
    from core.models.backends import is_torchscript
    from core.models.classifier import load_classifier

    path = Path(path)
    if path.is_dir() or is_torchscript(path):
        return load_classifier(path)
    want = (manifest.get("models") or {}).get("classifier_identity")
    spec = spec_from_identity(want)
    if spec is None:
        raise ClassifierLoadError(f"{path} is a weights file, and the run's classifier identity {want!r} names no "
                                  "torchvision or timm architecture to load it into")
    arch, layer = spec
    return load_classifier(arch, checkpoint=str(path), **({"feature_layer": layer} if layer else {}))


def resolve_run_classifier(manifest: dict, explicit: str | None = None):
    """The run's classifier: (adapter, folder or spec, note). Checks its identity against the manifest's and
    says in `note` when the one used is not the run's own."""
    from core.models.classifier import load_classifier

    want = (manifest.get("models") or {}).get("classifier_identity")
    if explicit:
        adapter = load_classifier(explicit)
        note = ""
        if want and adapter.identity != want:
            note = (f"the classifier given ({adapter.identity}) is not the one the run was explained with "
                    f"({want}); inferred groups describe the run's classifier")
        return adapter, explicit, note
    loaded = []
    for folder in classifier_candidates(manifest):
        try:
            adapter = load_candidate(folder, manifest)
        except ClassifierLoadError:
            continue
        if not want or adapter.identity == want:
            return adapter, str(folder), ""
        loaded.append((adapter, folder))
    if loaded:
        adapter, folder = loaded[0]
        return adapter, str(folder), (f"no checkpoint has the run's classifier identity {want}; using "
                                      f"{relative_to_repo(folder)} ({adapter.identity}), found by name")
    name = (manifest.get("models") or {}).get("classifier")
    if reason := builtin_refusal(want):
        raise ClassifierLoadError(reason)
    source = (manifest.get("models") or {}).get("classifier_source")
    recorded = f" (the run recorded {source}, which is not here)" if source and not classifier_candidates(manifest) \
        else ""
    raise ClassifierLoadError(f"cannot find the classifier {name!r} of this run{recorded} under "
                              f"{relative_to_repo(CLASSIFIERS_DIR)} or {relative_to_repo(paths.user_classifiers())}; "
                              "pass --classifier FOLDER")


@dataclass
class ModelSources:
    """Where the models of a run are: a classifier folder (or built-in name), a translator folder, an LM name
    or folder, and the run's dataset (its classes, kind and synsets), in whose classes the run read the
    classifier (core.models.label_space)."""

    classifier: str
    translator: str
    lm: str
    dataset: dict | None = None

    def describe(self) -> str:
        return f"classifier {self.classifier}, translator {self.translator}, language model {self.lm}"


def run_model_sources(manifest: dict) -> ModelSources:
    """The classifier, translator and LM that made a run, to explain new images the same way; a
    ClassifierLoadError naming what is missing."""
    from core.models.classifier import builtin_for

    from core.models.backends import is_torchscript

    models = manifest.get("models") or {}
    # What load_classifier takes alone: a folder or a TorchScript file (a bare weights file needs its architecture).
    candidates = [c for c in classifier_candidates(manifest) if c.is_dir() or is_torchscript(c)]
    # A built-in (e.g. the ImageNet-9 runs' unmodified classifier) is known by its weights, not a folder.
    classifier = candidates[0] if candidates else builtin_for(models.get("classifier_identity"))
    translator = as_checkpoint_folder(models.get("translator"))
    if translator is None and models.get("translator"):
        translator = as_checkpoint_folder(TRANSLATORS_DIR / Path(str(models["translator"])).name)
    problems = []
    if classifier is None:
        problems.append(f"the classifier {models.get('classifier')!r} is not a checkpoint folder here (looked in "
                        f"{CLASSIFIERS_DIR})")
    if translator is None:
        problems.append(f"the translator {models.get('translator')!r} is not a checkpoint folder here "
                        f"(looked in {TRANSLATORS_DIR})")
    if problems:
        raise ClassifierLoadError("Cannot explain new images with this run's models: " + "; ".join(problems)
                                  + ". Pick a run whose models ship with the project (the demo runs), or start a "
                                    "run from the New run page.")
    return ModelSources(str(classifier), str(translator), str(models.get("lm") or paths.DEFAULT_LM),
                        dataset=manifest.get("dataset"))


def classifier_for_run(classifier, sources: ModelSources):
    """`classifier` read in the run's dataset classes, as the run read it (an ImageNet classifier on ImageNet-9
    predicts "dog", not "Siberian Husky"); as is when it predicts them already or they cannot be matched
    (a run made before runs were read so)."""
    from types import SimpleNamespace

    from core.models.label_space import read_in_dataset_classes

    ds = sources.dataset or {}
    if not ds.get("class_names"):
        return classifier
    view = SimpleNamespace(class_names=[str(n) for n in ds["class_names"]], kind=ds.get("kind"),
                           class_synsets=ds.get("class_synsets"))
    try:
        return read_in_dataset_classes(classifier, view)
    except ClassifierLoadError:
        return classifier
