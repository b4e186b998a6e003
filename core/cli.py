"""`python -m core VERB ...` (or `texplain VERB ...`): set up assets, train a translator, explain a dataset,
write reports, mitigate, rebuild the demo.

One argparse tree: each verb is a module of core.commands with `add_parser(subparsers)` and `run(args)`,
so `python -m core --help` and `python -m core VERB --help` come from the same parser. Errors a user can
act on end in one line on stderr and exit status 2; `--debug` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core import paths  # noqa: F401  (sets the offline environment before any verb imports a model)
from core.commands import add_all

USER_ERROR_EXIT = 2


def build_parser(prog: str = "python -m core") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="TExplain Studio: explain in words what an image classifier "
                                 "has learned. Set up assets, train a translator, explain a dataset, write bias "
                                 "reports, mitigate, rebuild the demo.")
    ap.add_argument("--debug", action="store_true", help="show the full traceback when a command fails")
    sub = ap.add_subparsers(dest="command", required=True, metavar="VERB")
    add_all(sub)
    # `--debug` is accepted after the verb too; SUPPRESS keeps a verb from resetting the top-level value.
    for verb in sub.choices.values():
        verb.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the full traceback when the command fails")
    return ap


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the input is wrong", not "the program is wrong": one line, exit 2."""
    from core.store import RunStoreError

    return (FileNotFoundError, ValueError, NotImplementedError, RunStoreError)


def _prog() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "texplain" if name.startswith("texplain") else "python -m core"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_prog()).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    raise SystemExit(main())
