"""The command line: `texplain VERB ...` (or `python -m core VERB ...`); the only place with argparse."""
from core.cli.main import INTERNAL_ERROR_EXIT, USER_ERROR_EXIT, build_parser, main

__all__ = ["INTERNAL_ERROR_EXIT", "USER_ERROR_EXIT", "build_parser", "main"]
