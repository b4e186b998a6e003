"""`texplain VERB ...` (or `python -m core VERB ...`): set up, explain, report, mitigate, look at runs and jobs,
open the dashboard; maintainers rebuild the demo with `texplain maintain`.

One argparse tree: each verb is a module of core.cli.commands with `add_parser(subparsers)` and `run(args)`,
so `python -m core --help` and `python -m core VERB --help` come from the same parser. Every failure ends in one
line on stderr: exit status 2 for bad input (the project's TExplainError hierarchy, core.errors, and the
library errors bad files cause), 1 for a bug; `--debug` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core import paths  # noqa: F401  (sets the offline environment before any verb imports a model)
from core.cli.commands import add_all

USER_ERROR_EXIT = 2  # bad input: the message says what to fix
INTERNAL_ERROR_EXIT = 1  # a bug


def version() -> str:
    import importlib.metadata as md

    try:
        return md.version("texplain-studio")
    except md.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed: run make setup)"


def build_parser(prog: str = "python -m core") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="TExplain Studio: explain in words what an image classifier "
                                 "has learned, flag what it should not rely on, fix it and compare.",
                                 epilog=f"`{prog} VERB --help` describes a verb. Maintainers rebuild the shipped demo "
                                        f"with `{prog} maintain --help`.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    ap.add_argument("--debug", action="store_true", help="show the full traceback when a command fails")
    sub = ap.add_subparsers(dest="command", required=True, metavar="VERB")
    add_all(sub)
    # `--debug` is accepted after the verb too; SUPPRESS keeps a verb from resetting the top-level value.
    for verb in sub.choices.values():
        verb.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the full traceback when the command fails")
    return ap


def is_user_error(exc: BaseException) -> bool:
    """Whether `exc` means "the input is wrong" (exit 2) rather than "the program is wrong" (exit 1).

    The project's own errors all are; so are the errors that bad files raise in the libraries it reads
    them with, should one get past the checks that translate them (a refused pickle, a damaged Parquet
    file, a missing or unreadable path).
    """
    import pickle

    from core.errors import TExplainError

    user = (TExplainError, ValueError, OSError, NotImplementedError, pickle.UnpicklingError)
    duckdb = sys.modules.get("duckdb")  # never imported just to check: it is only there if a run was read
    if duckdb is not None:
        user += (duckdb.Error,)
    return isinstance(exc, user)


def one_line(exc: BaseException) -> str:
    """An error's message on one line (library messages can span several)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def _prog() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "texplain" if name.startswith("texplain") else "python -m core"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_prog()).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)  # resumable work (explain, train) picks up where it stopped
        return 130
    except Exception as exc:  # noqa: BLE001  (one line instead of a traceback, whatever went wrong)
        if args.debug:
            raise
        if is_user_error(exc):
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return USER_ERROR_EXIT
        print(f"error: internal error ({type(exc).__name__}: {one_line(exc)}); rerun with --debug for the "
              "traceback and report it", file=sys.stderr)
        return INTERNAL_ERROR_EXIT


if __name__ == "__main__":
    raise SystemExit(main())
