"""`texplain ui`: open the dashboard (Streamlit) on this machine."""
from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("ui", help="open the dashboard in a browser (Streamlit)", description=__doc__)
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default %(default)s)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default %(default)s: this machine only; 0.0.0.0 for every interface)")
    p.set_defaults(func=run)


def run(args) -> int:
    import subprocess
    import sys

    from core import paths
    from core.errors import TExplainError

    home = paths.ROOT / "dashboard" / "Home.py"
    if not home.is_file():
        raise TExplainError(f"the dashboard is not here ({home} is missing): `texplain ui` runs from a checkout of "
                            "TExplain Studio (pip install -e .), not from a wheel")
    print(f"TExplain Studio on http://{args.address}:{args.port} (Ctrl+C stops it)", flush=True)
    command = [sys.executable, "-m", "streamlit", "run", str(home), "--server.address", args.address,
               "--server.port", str(args.port)]
    try:
        return subprocess.call(command, cwd=str(paths.ROOT))
    except KeyboardInterrupt:
        return 0
