"""Config checks: the schema's defaults, semantic errors as one-liners, per-rung settings."""
import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from pita.config import check_config, rung_settings
from pita.errors import PitaInputError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")


def default_config():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate(cfg, SCHEMA)
    return cfg


def test_default_config_valid_and_filled():
    cfg = default_config()
    check_config(cfg)
    assert cfg["temperatures"][0] > cfg["temperatures"][-1]
    assert cfg["md_seed"]["minimize"] is True  # filled from the schema default
    for extra in sorted((ROOT / "workflow" / "configs").glob("*.yaml")):
        c = yaml.safe_load(extra.read_text())
        validate(c, SCHEMA)
        check_config(c, source=str(extra))


def test_rung_overrides_touch_only_their_rung():
    cfg = default_config()
    cfg["rungs"] = {"2": {"anneal": {"n_particles": 7}}}
    check_config(cfg)
    assert rung_settings(cfg, 2, "anneal")["n_particles"] == 7
    assert rung_settings(cfg, 1, "anneal") == cfg["anneal"]
    assert rung_settings(cfg, 2, "anneal")["n_steps"] == cfg["anneal"]["n_steps"]


BAD_PDB = "HETATM garbage\nEND\n"

# (label, mutation, expected field, expected problem fragment); applied by semantic check
SEMANTIC_CASES = [
    ("reversed temperatures", lambda c: c.update(temperatures=[300.0, 1200.0]), "temperatures", "must decrease"),
    ("duplicate temperature", lambda c: c.update(temperatures=[1200.0, 600.0, 600.0, 300.0]), "temperatures", "duplicate"),
    ("single temperature", lambda c: c.update(temperatures=[300.0]), "temperatures", "at least two"),
    ("negative temperature", lambda c: c.update(temperatures=[300.0, -1.0]), "temperatures[1]", "positive"),
    ("unknown system", lambda c: c.update(system="unobtainium"), "system", "unknown system 'unobtainium'"),
    ("missing pdb", lambda c: c.update(system={"pdb": "/nonexistent/x.pdb"}), "system.pdb", "PDB file not found"),
    ("rung override out of range", lambda c: c.update(rungs={"9": {"anneal": {"n_steps": 3}}}), "rungs.9", "not a rung index"),
    ("unknown override section", lambda c: c.update(rungs={"1": {"sample": {}}}), "rungs.1.sample", "unknown section"),
    ("unknown override setting", lambda c: c.update(rungs={"1": {"anneal": {"n_stepz": 3}}}), "rungs.1.anneal.n_stepz", "unknown setting"),
    ("negative override count", lambda c: c.update(rungs={"1": {"anneal": {"n_particles": -5}}}), "rungs.1.anneal.n_particles", ">= 1"),
    ("wrong override type", lambda c: c.update(rungs={"1": {"train": {"steps": "many"}}}), "rungs.1.train.steps", "must be an integer"),
    ("bad override enum", lambda c: c.update(rungs={"1": {"anneal": {"divergence": "magic"}}}), "rungs.1.anneal.divergence", "one of"),
    # typos refused before any job (they used to pass and fail inside a job, or be ignored)
    ("typo in relax", lambda c: c["relax"].update(n_stepz=500), "relax.n_stepz", "unknown setting"),
    ("typo in anneal", lambda c: c["anneal"].update(n_particle=100), "anneal.n_particle", "unknown setting"),
    ("typo in nested train", lambda c: c["train"].update(model={"backbon": "mlp"}), "train.model.backbon",
     "unknown setting"),
    ("old train.options", lambda c: c["train"].update(options={"lr": 1e-3}), "train.options", "unknown setting"),
    ("unknown top-level key", lambda c: c.update(temperaturs=[1, 2]), "temperaturs", "unknown setting"),
    ("rung key with a leading zero", lambda c: c.update(rungs={"01": {"relax": {"n_steps": 3}}}), "rungs.01",
     "without leading zeros"),
    ("override that never applies", lambda c: c.update(rungs={"0": {"anneal": {"n_steps": 3}}}), "rungs.0.anneal",
     "would never apply"),
    ("train override at the last rung", lambda c: c.update(rungs={"3": {"train": {"steps": 3}}}), "rungs.3.train",
     "would never apply"),
    ("run name escaping results/", lambda c: c.update(run_name=".."), "run_name", "not starting with a dot"),
    ("run name with a slash", lambda c: c.update(run_name="a/b"), "run_name", "letters, digits"),
    ("infinite first temperature", lambda c: c.update(temperatures=[float("inf"), 300.0]), "temperatures[0]",
     "finite"),
    ("NaN temperature", lambda c: c.update(temperatures=[1200.0, float("nan")]), "temperatures[1]", "finite"),
    ("huge seed", lambda c: c.update(seed=10**23), "seed", "must be an integer in"),
    ("float seed", lambda c: c.update(seed=1e23), "seed", "must be an integer in"),
    ("billion particles", lambda c: c["anneal"].update(n_particles=10**9), "anneal.n_particles", "<= 1e+07"),
    ("platform payload", lambda c: c["md_seed"].update(platform="Reference'$(touch x)'"), "md_seed.platform",
     "must be one of"),
    ("system spec unknown key", lambda c: c.update(system={"pdb": "alanine_dipeptide.pdb", "colour": "red"}),
     "system.colour", "unknown key"),
    ("unknown baseline", lambda c: c["baselines"].update(methods=["md", "smc2"]), "baselines.methods",
     "unknown baseline"),
    ("schedule upside down", lambda c: c["train"].update(schedule={"sigma_min": 0.5, "sigma_max": 0.2}),
     "train.schedule.sigma_max", "above sigma_min"),
    ("reference file off ladder", lambda c: c["reference"].update(files={"123.0": "config.yaml"}), "reference.files.123.0", "not on the ladder"),
    ("reference file missing", lambda c: c["reference"].update(files={"300.0": "/no/such.h5"}), "reference.files.300.0", "file not found"),
    # export, resources and the GPU model (cluster profile)
    ("unknown export format", lambda c: c["export"].update(formats=["dcd", "mol2"]), "export.formats",
     "unknown format 'mol2'"),
    ("export format twice", lambda c: c["export"].update(formats=["dcd", "dcd"]), "export.formats", "at most once"),
    ("no export format", lambda c: c["export"].update(formats=[]), "export.formats", "at least one"),
    ("export rungs", lambda c: c["export"].update(rungs="some"), "export.rungs", "must be one of final, all"),
    ("export typo", lambda c: c["export"].update(format=["dcd"]), "export.format", "unknown setting"),
    ("runtime zero", lambda c: c.update(resources={"train": {"runtime": 0}}), "resources.train.runtime", ">= 1"),
    ("runtime of a year", lambda c: c.update(resources={"train": {"runtime": 525600}}), "resources.train.runtime",
     "<= 10080"),
    ("memory as text", lambda c: c.update(resources={"anneal": {"mem_mb": "16G"}}), "resources.anneal.mem_mb",
     "must be an integer"),
    ("resources of an unknown rule", lambda c: c.update(resources={"sample": {"runtime": 5}}), "resources.sample",
     "unknown setting"),
    ("gpu model payload", lambda c: c.update(gpu_model="a100 --wrap=x"), "gpu_model", "GPU model name"),
    # a planned budget cannot know the bridge's cost
    ("planned budget with a rung that always bridges",
     lambda c: c.setdefault("rungs", {}).setdefault("2", {}).update(relax={"bridge": "always"}), "baselines.budget",
     "rung 2's relaxation always runs the bridge"),
    ("budget mode unknown", lambda c: c["baselines"].update(budget="estimated"), "baselines.budget", "must be one of"),
    # hostile configs found by review: each used to pass, be ignored, or give a traceback
    ("rung given as 1 and as '1'", lambda c: c.update(rungs={1: {"anneal": {"n_steps": 3}},
                                                             "1": {"anneal": {"n_steps": 4}}}), "rungs.1", "given twice"),
    ("rung key with a newline", lambda c: c.update(rungs={"1\n": {"anneal": {"n_steps": 3}}}), "rungs.'1\\n'",
     "not a rung index"),
    ("rungs as a list", lambda c: c.update(rungs=[]), "rungs", "must be a mapping"),
    ("run name with a newline", lambda c: c.update(run_name="aldp\n"), "run_name", "letters, digits"),
    ("gpu model with a newline", lambda c: c.update(gpu_model="a100\n"), "gpu_model", "GPU model name"),
    ("400-digit temperature", lambda c: c.update(temperatures=[10**400, 300.0]), "temperatures[0]", "finite"),
    ("400-digit float setting", lambda c: c["anneal"].update(sigma_max=10**400), "anneal.sigma_max",
     "must be a finite number"),
    ("per-rung reference files", lambda c: c.update(rungs={"2": {"reference": {"files": {"555.52": "x.h5"}}}}),
     "rungs.2.reference.files", "at the top level"),
    ("per-rung cross-check", lambda c: c.update(rungs={"3": {"reference": {"cross_check": {"300.0": "x.h5"}}}}),
     "rungs.3.reference.cross_check", "at the top level"),
    ("warm start with another backbone", lambda c: c.update(rungs={"1": {"train": {"model": {"backbone": "mlp"}}}}),
     "rungs.1.train.model.backbone", "keeps the architecture"),
    ("warm start with other options", lambda c: c.update(
        rungs={"2": {"train": {"model": {"backbone_options": {"hidden": 8}}}}}),
     "rungs.2.train.model.backbone_options", "differs from rung 1's"),
    ("pdb without a force field", lambda c: c.update(system={"pdb": "alanine_dipeptide.pdb"}), "system.forcefield",
     "required"),
    ("empty force field", lambda c: c.update(system={"pdb": "alanine_dipeptide.pdb", "forcefield": []}),
     "system.forcefield", "non-empty list"),
    ("force field file that does not exist", lambda c: c.update(
        system={"pdb": "alanine_dipeptide.pdb", "forcefield": ["nonexistent.xml"]}), "system.forcefield",
     "cannot load force field"),
    ("force field that does not fit", lambda c: c.update(
        system={"pdb": "alanine_dipeptide.pdb", "forcefield": ["tip3p.xml"]}), "system.forcefield",
     "cannot be applied"),
    ("system name not a string", lambda c: c.update(
        system={"pdb": "alanine_dipeptide.pdb", "forcefield": ["amber99sbildn.xml"], "name": 5}), "system.name",
     "non-empty printable string"),
    ("typo in a pdb folder", lambda c: c.update(
        system={"pdb": "typo_dir/alanine_dipeptide.pdb", "forcefield": ["amber99sbildn.xml"]}), "system.pdb",
     "PDB file not found"),
]


def test_rung_override_under_an_integer_key_applies():
    """YAML reads `rungs: {1: ...}` with an integer key: it applies as "1" does (it was ignored)."""
    from pita.config import rung_settings

    cfg = default_config()
    cfg["rungs"] = {1: {"anneal": {"n_steps": 3}}, "2": {"anneal": {"n_steps": 4}}}
    check_config(cfg, source="my.yaml")
    assert [rung_settings(cfg, k, "anneal")["n_steps"] for k in (1, 2, 3)] == [3, 4, cfg["anneal"]["n_steps"]]


def test_warm_start_off_allows_another_architecture():
    cfg = default_config()
    cfg["rungs"] = {"1": {"train": {"model": {"backbone": "mlp"}, "warm_start": False}}}
    with pytest.raises(PitaInputError, match="rungs.2.train.model.backbone': 'pairnet' differs from rung 1's 'mlp'"):
        check_config(cfg, source="my.yaml")  # rung 2 would warm-start from rung 1's mlp
    cfg["rungs"]["2"] = {"train": {"model": {"backbone": "mlp"}}}
    check_config(cfg, source="my.yaml")


def test_spent_budget_allows_a_rung_that_always_bridges():
    cfg = default_config()
    cfg["relax"]["bridge"] = "always"
    cfg["baselines"]["budget"] = "spent"
    check_config(cfg, source="my.yaml")


@pytest.mark.parametrize("label,mutate,field,problem", SEMANTIC_CASES, ids=[c[0] for c in SEMANTIC_CASES])
def test_semantic_errors(label, mutate, field, problem):
    cfg = default_config()
    mutate(cfg)
    with pytest.raises(PitaInputError) as exc:
        check_config(cfg, source="my.yaml")
    msg = str(exc.value)
    assert msg.startswith(f"my.yaml: field '{field}'") and problem in msg and "\n" not in msg


def test_h5_export_needs_pytables(monkeypatch):
    from pita.commands import export

    monkeypatch.setattr(export, "_available", lambda fmt: fmt.needs is None)
    cfg = default_config()
    cfg["export"]["formats"] = ["dcd", "h5"]
    with pytest.raises(PitaInputError) as exc:
        check_config(cfg, source="my.yaml")
    assert str(exc.value) == ("my.yaml: field 'export.formats': format 'h5' needs the Python package 'tables', "
                              "which is not installed here")


def test_resources_fill_per_rule_defaults():
    from pita.settings import ResourceSettings, from_mapping

    got = from_mapping(ResourceSettings, {"train": {"runtime": 300}}, "my.yaml", prefix="resources.")
    defaults = ResourceSettings()
    assert got.train.runtime == 300 and got.train.mem_mb == defaults.train.mem_mb == 8000
    assert got.report == defaults.report and defaults.report.runtime == 10
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate(cfg, SCHEMA)  # the schema fills each rule's own defaults
    assert cfg["resources"]["train"] == {"runtime": 240, "mem_mb": 8000}
    assert cfg["export"] == {"enabled": True, "formats": ["dcd"], "rungs": "final", "superpose": False}


def test_malformed_pdb(tmp_path):
    bad = tmp_path / "broken.pdb"
    bad.write_text(BAD_PDB)
    cfg = default_config()
    cfg["system"] = {"pdb": str(bad)}
    with pytest.raises(PitaInputError, match=r"field 'system.pdb'.*broken.pdb"):
        check_config(cfg)


SCHEMA_CASES = [
    ("temperature not a number", {"temperatures": [1200.0, "cold"]}, "is not of type 'number'"),
    ("negative md samples", {"md_seed": {"n_samples": -3}}, "minimum"),
    ("unknown top-level key", {"temperaturs": [1, 2]}, "Additional properties"),
    ("typo in relax", {"relax": {"n_stepz": 500}}, "Additional properties"),
    ("rung key with a leading zero", {"rungs": {"01": {}}}, "does not match"),
    ("run name escaping results/", {"run_name": ".."}, "does not match"),
    ("bad device", {"device": "tpu"}, "is not one of"),
    ("resample threshold above 1", {"anneal": {"resample_threshold": 1.5}}, "maximum"),
]


@pytest.mark.parametrize("label,patch,fragment", SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES])
def test_schema_errors(label, patch, fragment):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg = copy.deepcopy(cfg)
    cfg.update(patch)
    with pytest.raises(Exception) as exc:
        validate(cfg, SCHEMA)
    assert fragment in str(exc.value)


def test_default_300k_reference_visits_every_basin_and_md_is_the_cross_check():
    """alpha_L is read against the replica-exchange set; the 40 ns MD set (no alpha_L) is the cross-check."""
    cfg = default_config()
    assert cfg["reference"]["files"][300.0] == "data/reference/aldp_300K_rex.h5"
    assert cfg["reference"]["cross_check"][300.0] == "data/reference/aldp_300K.h5"


@pytest.mark.parametrize("cross,fragment", [
    ({1234.0: "data/reference/aldp_300K.h5"}, "field 'reference.cross_check.1234.0': temperature is not on the ladder"),
    ({300.0: "data/reference/nope.h5"}, "field 'reference.cross_check.300.0': file not found"),
    ({"hot": "data/reference/aldp_300K.h5"}, "field 'reference.cross_check.hot': key must be a temperature"),
])
def test_bad_cross_check_is_one_line_naming_the_field(cross, fragment):
    cfg = default_config()
    cfg["reference"]["cross_check"] = cross
    with pytest.raises(PitaInputError) as exc:
        check_config(cfg, source="config.yaml")
    assert fragment in str(exc.value) and str(exc.value).startswith("config.yaml: ") and "\n" not in str(exc.value)


def test_unique_keys_check_reads_merge_keys_and_json(tmp_path):
    """Duplicate keys are refused in YAML and JSON; a YAML merge (`<<: *anchor`, then an override of
    a merged key) and a JSON file indented with tabs (not YAML) are fine."""
    import json

    from pita.config import check_unique_keys

    merged = tmp_path / "merged.yaml"
    merged.write_text("small: &small {runtime: 5, mem_mb: 1000}\nresources:\n  train:\n    <<: *small\n    runtime: 9\n")
    tabs = tmp_path / "tabs.json"
    tabs.write_text(json.dumps(default_config(), indent="\t"))
    check_unique_keys([merged, tabs])
    twice = tmp_path / "twice.json"
    twice.write_text('{\n\t"seed": 1,\n\t"seed": 2\n}')
    with pytest.raises(PitaInputError, match=r"twice.json: key 'seed' given twice in one object"):
        check_unique_keys([twice])
    nested = tmp_path / "nested.yaml"
    nested.write_text("anneal:\n  n_steps: 3\n  n_steps: 4\n")
    with pytest.raises(PitaInputError, match=r"nested.yaml: line 3: key 'n_steps' given twice .*first on line 2"):
        check_unique_keys([nested])
