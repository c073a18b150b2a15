"""The documentation stands alone: no pointer outside the repository, every CLI option has a help
text, and docs/METHOD.md states the weight formulas the code's docstring states."""
import argparse
import contextlib
import io
import re
import shlex
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


def _fenced_blocks(text: str) -> list[str]:
    blocks, current = [], None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _pita_commands(block: str):
    """(line, argv) of each `pita <step> ...` command in a shell block: continuations joined,
    a quoted argument spanning lines (a JSON object) read whole, comments dropped."""
    lines = re.sub(r"\\\n\s*", " ", block).splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        m = re.match(r"^(?:\w+=\S+ )*pita (\S.*)$", line)
        if not m:
            continue
        text = m.group(1)
        while True:
            lexer = shlex.shlex(text, posix=True)
            lexer.whitespace_split, lexer.commenters = True, "#"
            try:
                yield line, list(lexer)
                break
            except ValueError:  # an open quote: the argument goes on on the next line
                assert i < len(lines), f"unterminated quote in {line!r}"
                text += " " + lines[i].strip()
                i += 1


def test_documented_pita_commands_parse():
    """Every `pita ...` command in a shell block of the docs is one the CLI accepts (options renamed in
    the code must be renamed in the docs)."""
    bad, seen = [], 0
    for path in _tracked_files():
        if path.suffix != ".md" or not path.is_file():
            continue
        for block in _fenced_blocks(path.read_text(encoding="utf-8")):
            for line, argv in _pita_commands(block):
                seen += 1
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    try:
                        build_parser().parse_args(argv)
                    except SystemExit as exc:
                        if exc.code:
                            why = (err.getvalue().strip().splitlines() or [f"exit {exc.code}"])[-1]
                            bad.append(f"{path.relative_to(ROOT)}: {line[:80]}...: {why}")
    assert seen >= 10, f"only {seen} documented commands found: the extraction is broken"
    assert not bad, "documented commands the CLI refuses:\n" + "\n".join(bad)
