"""The mitigation's knobs, with no heavy import, so the command line reads its defaults from here."""
from __future__ import annotations

from dataclasses import dataclass

METHODS = ("dfr", "masktune", "all")
GROUP_CHOICES = ("inferred", "true", "class", "both", "all")
PENALTIES = ("l1", "l2")
BALANCES = ("auto", "subsample", "weights")


@dataclass
class MitigationConfig:
    method: str = "dfr"  # "dfr" (last-layer reweighting), "masktune", or "all" (both)
    # Groups DFR balances over: inferred from the explanations, the dataset's true groups (a reference), class
    # (classes only: a control showing what the groups add); "both" = inferred + true, "all" = the three.
    groups: str = "inferred"
    penalty: str = "l1"  # DFR: penalty of the refit last layer
    # DFR: group-balanced subsamples (as in DFR), group weights, or "auto": subsamples unless the smallest group
    # has fewer than 20 images.
    balance: str = "auto"
    masktune_epochs: int = 1
    masktune_lr: float = 1e-3  # MaskTune keeps the ERM fine-tuning settings (core.engine.finetune) for one epoch
    seed: int = 0
    save: bool = True  # save each new classifier (float16) under OUT/<method>-<groups>
    # Write a run of each refit classifier on the test run's images, reusing the test run's explanations (a refit
    # last layer keeps the features, so the sentences are the same; core.engine.rescore).
    write_runs: bool = True

    def __post_init__(self):
        for name, allowed in (("method", METHODS), ("groups", GROUP_CHOICES), ("penalty", PENALTIES),
                              ("balance", BALANCES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.masktune_epochs < 1:
            raise ValueError(f"masktune_epochs must be >= 1, got {self.masktune_epochs}")
