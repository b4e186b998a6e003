"""The verbs of `python -m core` (and the `texplain` console script), one module each.

Every module exposes `add_parser(subparsers)`, which adds its sub-parser with its own options and
`func=run` as its default (what `core.cli.main` calls), and `run(args) -> int`. Options are parsed once,
by one argparse tree (`core.cli.build_parser`), so `--help` reads the same at every level; a new verb is
one new module named in VERBS. Verb modules import no model code (torch, transformers) at the top, so
`--help` stays quick.
"""
from __future__ import annotations

import importlib

# Modules, in the order `--help` lists their verbs (`assets` holds the verb `setup`).
VERBS = ("assets", "finetune", "train", "explain", "report", "evaluate", "mitigate", "demo")


def add_all(subparsers) -> None:
    """Register every verb's sub-parser on `subparsers` (from `ArgumentParser.add_subparsers`)."""
    for verb in VERBS:
        importlib.import_module(f"core.commands.{verb}").add_parser(subparsers)
