"""One settings layer: the schema, the CLI and the rules derive from pita.settings, and no config
value ever reaches a shell as code."""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pita import settings as S
from pita.cli import build_parser
from pita.errors import PitaInputError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

#: subcommand -> the settings class whose fields it exposes
COMMANDS = {"md": S.MDSettings, "reference": S.ReferenceSettings, "train": S.TrainSettings,
            "anneal": S.AnnealSettings, "relax": S.RelaxSettings, "evaluate": S.EvaluateSettings,
            "baseline": S.BaselineSettings}


def test_committed_schema_is_the_generated_one():
    assert SCHEMA.read_text() == S.schema_yaml(), \
        "workflow/schemas/config.schema.yaml is stale: run `python -m pita.settings > workflow/schemas/config.schema.yaml`"


def test_schema_defaults_are_the_settings_defaults():
    schema = yaml.safe_load(SCHEMA.read_text())
    for section, cls in S.SECTIONS.items():
        props = schema["$defs"][section]["properties"]
        assert set(props) == {f.name for f in dataclasses.fields(cls)}, section
        for name, value in S.to_dict(cls()).items():
            if isinstance(value, dict) and "properties" in props[name]:
                for sub, subvalue in value.items():
                    assert props[name]["properties"][sub].get("default") == subvalue, f"{section}.{name}.{sub}"
            else:
                assert props[name].get("default") == value, f"{section}.{name}"
        assert schema["$defs"][section]["additionalProperties"] is False


def test_training_defaults_come_from_the_settings():
    from pita.training import DEFAULT_CONFIG, resolve_config

    expected = {k: v for k, v in S.to_dict(S.TrainSettings()).items() if k != "warm_start"}
    assert DEFAULT_CONFIG == expected
    assert resolve_config({}) == expected


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_options_are_the_settings(command):
    """Every scalar setting is an option of its command, unset by default, its help showing the
    settings' default; abbreviations are refused."""
    sub = _subparsers()[command]
    assert sub.allow_abbrev is False
    options = {a.dest: a for a in sub._actions}
    cls = COMMANDS[command]
    defaults = cls()
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or dataclasses.is_dataclass(f.type if not isinstance(f.type, str) else None):
            continue
        value = getattr(defaults, f.name)
        if isinstance(value, (dict, list)) or dataclasses.is_dataclass(value):
            continue
        assert f.name in options, f"{command}: no option for setting {f.name}"
        action = options[f.name]
        assert action.default is None, f"{command} --{f.name}: a CLI default would shadow --config-json"
        assert "--" + f.name.replace("_", "-") in action.option_strings
        if value is not None:
            assert f"(default: {value})" in action.help, f"{command} --{f.name}: help does not show {value}"
    assert "config_json" in options


def test_command_line_wins_over_config_json_and_defaults_fill_the_rest():
    from pita.cli import build_parser

    args = build_parser().parse_args(["anneal", "--checkpoint", "m.pt", "--system", "lj13", "--temperature", "1",
                                      "--out", "o.h5", "--n-steps", "7",
                                      "--config-json", '{"n_steps": 3, "n_particles": 11}'])
    got = S.from_arguments(S.AnnealSettings, args, section="anneal")
    assert (got.n_steps, got.n_particles, got.resample_threshold) == (7, 11, S.AnnealSettings().resample_threshold)


@pytest.mark.parametrize("data,fragment", [
    ({"n_particle": 3}, "field 'anneal.n_particle': unknown setting"),
    ({"n_particles": True}, "must be an integer"),
    ({"n_particles": 2.0}, "must be an integer"),
    ({"n_particles": 0}, "must be >= 1"),
    ({"resample_threshold": float("nan")}, "must be a finite number"),
    ({"divergence": "magic"}, "must be one of exact, hutchinson"),
    ({"sigma_min": 2.0, "sigma_max": 1.0}, "must be below sigma_max"),
    ({"level_ess": 0.9, "weights": "discrete"}, "field 'anneal.level_ess': refines the levels of weights 'ais'"),
    ({"level_ess": 1.0, "weights": "ais"}, "must be < 1"),
    ({"leapfrog_steps": 4, "weights": "continuous"}, "field 'anneal.leapfrog_steps': HMC moves need weights 'ais'"),
    ({"leapfrog_steps": 0, "weights": "ais"}, "must be >= 1"),
    ([1, 2], "must be a mapping"),
])
def test_from_mapping_refuses(data, fragment):
    with pytest.raises(PitaInputError) as exc:
        S.from_mapping(S.AnnealSettings, data, "my.yaml", prefix="anneal.")
    assert fragment in str(exc.value) and str(exc.value).startswith("my.yaml: field ")


@pytest.mark.parametrize("cls", list(S.SECTIONS.values()))
def test_settings_round_trip(cls):
    assert S.from_mapping(cls, S.to_dict(cls()), "x") == cls()


# ---------------------------------------------------------------------------------------------
# the rules
# ---------------------------------------------------------------------------------------------
RULES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
#: placeholders that are numbers or fixed words, never free text
SAFE = {"params.seed", "params.temperature", "params.next_temperature", "params.temperatures", "threads", "wildcards.later", "wildcards.rung",
        "wildcards.method"}


@pytest.mark.parametrize("rule_file", RULES, ids=[r.name for r in RULES])
def test_rules_quote_every_free_value(rule_file):
    text = rule_file.read_text()
    assert "python -c" not in text and "python3 -c" not in text, "inline Python in a rule"
    shells = re.findall(r"shell:\s*\n((?:\s+\".*\"\n)+)", text)
    for shell in shells:
        for field in re.findall(r"\{([^{}]+)\}", shell):
            name, _, spec = field.partition(":")
            if name in SAFE:
                continue
            assert spec == "q", f"{rule_file.name}: {{{field}}} reaches the shell unquoted"


def test_rules_pass_settings_as_one_json():
    for rule_file in RULES:
        text = rule_file.read_text()
        assert "cli_flags" not in text and "step_flags" not in text


# ---------------------------------------------------------------------------------------------
# payloads in every free-text field: a real job runs and nothing is executed
# ---------------------------------------------------------------------------------------------
def _payload(tag: str) -> str:
    return f"x'\"$(touch PWNED_{tag})\"`touch PWNED_{tag}b`;touch PWNED_{tag}c;'"


def test_payloads_in_free_text_fields_never_run(tmp_path):
    from pita.samples import SampleSet
    from pita.systems import load

    work = tmp_path / "work"
    work.mkdir()
    pdb = work / f"ala{_payload('pdb')}.pdb"
    shutil.copyfile(ROOT / "data" / "alanine_dipeptide.pdb", pdb)
    name = f"aldp{_payload('name')}"
    system = {"name": name, "pdb": pdb.name, "forcefield": ["amber99sbildn.xml", "amber99_obc.xml"],
              "length_scale": 0.164}
    temps = [1200.0, 600.0]
    aldp = load("alanine_dipeptide")
    rng = np.random.default_rng(0)
    x = np.asarray(aldp.reference_positions)[None] + 0.001 * rng.standard_normal((16, aldp.n_atoms, 3))
    given = work / f"ref{_payload('ref')}.h5"
    SampleSet(positions=x.astype(np.float32), energy=np.zeros(16),
              attrs=dict(system=name, temperature=600.0, units="kJ/mol,nm", length_scale=0.164,
                         n_energy_evals=0, n_energy_evals_total=0, rung=1)).write(given)
    cfg = yaml.safe_load((ROOT / "workflow" / "configs" / "tiny.yaml").read_text())
    cfg.update(system=system, temperatures=temps, run_name="payload")
    cfg["md_seed"].update(n_samples=16, replicas=4, stride_steps=5, equilibration_steps=10, engine="torch")
    cfg["reference"] = {"files": {"600.0": given.name}}
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    targets = ["results/payload/rung_0/samples.h5", "results/payload/reference/rung_1.h5"]
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(work),
                           "--configfile", str(config), "--cores", "1", *targets],
                          capture_output=True, text=True, timeout=600, env=env)
    log = proc.stdout + proc.stderr
    for folder in (work, ROOT, tmp_path):
        assert not list(folder.glob("PWNED*")), f"a payload ran in {folder}:\n{log[-3000:]}"
    assert proc.returncode == 0, log[-3000:]
    seed = SampleSet.read(work / targets[0])
    assert seed.attrs["system"] == name and len(seed) == 16
    ref = SampleSet.read(work / targets[1])
    assert ref.attrs["system"] == name and ref.attrs["reference_source"] == given.name


def test_train_cli_offers_every_backbone_the_config_accepts():
    """`pita train --backbone` and config.yaml's train.model.backbone take the same networks."""
    import argparse

    from pita.cli import build_parser
    from pita.models import BACKBONES as BUILT, DEFAULT_OPTIONS, make_backbone
    from pita.settings import BACKBONES, ModelSettings

    train = next(a.choices["train"] for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    option = next(a for a in train._actions if "--backbone" in a.option_strings)
    config_choices = ModelSettings.__dataclass_fields__["backbone"].metadata["choices"]
    assert tuple(option.choices) == tuple(config_choices) == BACKBONES == BUILT
    assert "pairnet" in BACKBONES
    assert set(DEFAULT_OPTIONS) == set(BACKBONES)
    for name in BACKBONES:  # every name the config accepts builds a network
        assert make_backbone(name, 9, 3, "scalar") is not None
