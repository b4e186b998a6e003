"""The verbs of `texplain` (and `python -m core`), one module each.

Every module exposes `add_parser(subparsers)`, which adds its sub-parser with its own options and
`func=run` as its default (what `core.cli.main` calls), and `run(args) -> int`. Options are parsed once,
by one argparse tree (`core.cli.build_parser`), so `--help` reads the same at every level; a new verb is
one new module named in VERBS. Option defaults come from the config dataclasses (core.engine.config,
core.mitigation.config). Verb modules import no model code (torch, transformers) at the top, so `--help`
stays quick.
"""
from __future__ import annotations

import importlib

# Modules, in the order `--help` lists their verbs; `maintain` (the demo rebuild) is not listed there.
VERBS = ("setup", "explain", "report", "audit", "verify", "runs", "jobs", "ui", "train", "finetune", "evaluate",
         "mitigate", "maintain")


def add_all(subparsers) -> None:
    """Register every verb's sub-parser on `subparsers` (from `ArgumentParser.add_subparsers`)."""
    for verb in VERBS:
        importlib.import_module(f"core.cli.commands.{verb}").add_parser(subparsers)
