"""The command line: one argparse tree (every verb a module of core.cli.commands), one error path, and the
`texplain` console script that pyproject.toml declares."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from core import cli
from core.cli.commands import VERBS

ROOT = Path(__file__).resolve().parents[2]
VERB_NAMES = ("setup", "explain", "report", "audit", "verify", "runs", "jobs", "ui", "train", "finetune", "evaluate",
              "mitigate")


def _help(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_every_verb_is_in_the_one_tree_and_its_help_comes_from_it(capsys):
    top = _help(capsys, ["--help"])
    for verb in VERB_NAMES:
        assert verb in top
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {*VERB_NAMES, "maintain"} and len(VERBS) == len(VERB_NAMES) + 1
    for verb in (*VERB_NAMES, "maintain"):
        text = _help(capsys, [verb, "--help"])
        # The verb's own help, under the tree's program name, with the shared --debug option.
        assert text.startswith(f"usage: python -m core {verb}") and "--debug" in text
    assert "--compare" in _help(capsys, ["report", "--help"])
    assert "--test-run" in _help(capsys, ["mitigate", "--help"])
    assert "--splits" in _help(capsys, ["maintain", "--help"])


def test_python_dash_m_core_runs_the_tree():
    out = subprocess.run([sys.executable, "-m", "core", "report", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m core report")


def test_a_user_error_is_one_line_and_exit_2_and_debug_shows_the_traceback(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run at") and err.count("\n") == 1
    with pytest.raises(Exception, match="no run at"):
        cli.main(["report", str(tmp_path / "missing"), "--debug"])
    with pytest.raises(Exception, match="no run at"):
        cli.main(["--debug", "report", str(tmp_path / "missing")])


def test_version_and_the_maintainer_verb_out_of_the_user_list(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.split()[-1][0].isdigit()
    listing = cli.build_parser("texplain").format_help()
    assert "explain" in listing and "maintain --help" in listing
    assert "  maintain" not in listing  # a maintainer command, named in the epilog only
    with pytest.raises(SystemExit) as exc:
        cli.main(["maintain", "nonsense"])
    assert exc.value.code == 2  # argparse: invalid choice


def test_pyproject_declares_the_console_script_and_every_pinned_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["texplain"] == "core.cli:main"
    pinned = {re.split(r"[=<>~ \[]", line.strip())[0].lower()  # extras ("ray[data]") name the same package
              for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.strip().startswith("#")}
    declared = {re.split(r"[=<>~ \[]", d)[0].lower() for d in project["dependencies"]}
    assert pinned == declared


def test_every_option_of_every_verb_says_what_it_is_for():
    import argparse

    def undocumented(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from undocumented(sub, [*path, name])
            elif action.help is not argparse.SUPPRESS and action.dest != "help" \
                    and len((action.help or "").replace("(default %(default)s)", "").strip()) < 8:
                yield f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}: {action.help!r}"

    assert list(undocumented(cli.build_parser("texplain"), [])) == []


def test_no_scene_gate_switches_the_translators_gate_off_and_the_default_keeps_it():
    from core.cli.commands.explain import config_from
    from core.cli.main import build_parser

    base = ["explain", "--classifier", "resnet18", "--translator", "t", "--dataset", "d", "--out", "o"]
    assert config_from(build_parser().parse_args(base)).scene_gate is True
    assert config_from(build_parser().parse_args(base + ["--no-scene-gate"])).scene_gate is False
