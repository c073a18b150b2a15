"""The documentation stands alone: no pointer outside the repository, every CLI option has a help
text, and docs/METHOD.md states the weight formulas the code's docstring states."""
import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import pita.fksmc
from pita.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "METHOD.md"
# spelled in pieces so that this file does not match itself
FORBIDDEN = ("../" + "shared", "DESIGN" + ".md")
# the final correction and the weight rates as pita/fksmc.py's module docstring writes them
FORMULAS = (
    "log w = A - U(x)/(k_B T_{k+1}) + gamma E(x~, sigma_min)",
    "dA/ds = gamma^2 <-grad E, b> + gamma div b + gamma dE/dt",
    "b = (g^2/2) s",
    "dA/ds = -d phi/d s + div u - <u, grad phi> - (g_n^2/2) (|grad phi|^2 - laplacian phi)",
)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / p for p in out.decode().split("\0") if p]


def test_no_tracked_file_points_outside_the_repository():
    hits = []
    for path in _tracked_files():
        if not path.is_file():  # deleted in the working tree, or a submodule
            continue
        data = path.read_bytes()
        hits += [f"{path.relative_to(ROOT)}: {s!r}" for s in FORBIDDEN if s.encode() in data]
    assert not hits, "references outside the repository (point to docs/METHOD.md instead):\n" + "\n".join(hits)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}


def test_every_option_of_every_subcommand_has_a_help_text():
    subs = _subcommands(build_parser())
    assert {"md", "train", "anneal", "relax", "evaluate"} <= set(subs)
    missing = []
    for name, sub in subs.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            text = action.help
            if text is None or text == argparse.SUPPRESS or not str(text).strip():
                missing.append(f"pita {name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "options without help:\n" + "\n".join(missing)


def test_method_states_the_code_formulas():
    assert METHOD.is_file(), "docs/METHOD.md is missing"
    method = _squash(METHOD.read_text(encoding="utf-8"))
    doc = _squash(pita.fksmc.__doc__)
    for formula in FORMULAS:
        squashed = _squash(formula)
        assert squashed in doc, f"pita/fksmc.py's docstring no longer states {formula!r}: update this test and METHOD"
        assert squashed in method, f"docs/METHOD.md does not state {formula!r} as pita/fksmc.py does"


def test_method_pointers_name_existing_sections():
    """Pointers 'docs/METHOD.md, section N' in tracked files name a section METHOD.md has."""
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", METHOD.read_text(encoding="utf-8"), flags=re.M))
    bad = []
    for path in _tracked_files():
        if path.suffix not in (".py", ".md", ".smk", ".yaml", ".rst") or not path.is_file():
            continue
        for ref in re.findall(r"docs/METHOD\.md, section (\d+(?:\.\d+)?)", path.read_text(encoding="utf-8")):
            if ref not in sections:
                bad.append(f"{path.relative_to(ROOT)}: section {ref}")
    assert not bad, "pointers to sections docs/METHOD.md does not have:\n" + "\n".join(bad)
