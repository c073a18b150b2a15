"""envs/pita.yaml (conda, for --sdm conda) stays in step with pyproject.toml."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge name where they differ
CONDA_NAME = {"torch": "pytorch"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].strip().lower()


def test_conda_env_lists_every_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "envs" / "pita.yaml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    missing = [r for r in project["dependencies"] if CONDA_NAME.get(_name(r), _name(r)) not in conda]
    assert not missing, f"envs/pita.yaml lacks {missing}"
    # the package itself is installed from the checkout
    pip_part = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    assert any(p.startswith("-e") for p in pip_part)


def test_console_script_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["pita"] == "pita.cli:main"
