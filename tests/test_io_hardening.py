"""Hostile input files and output safety: every problem is one PitaInputError line naming the file.

Sample sets with groups where datasets belong (and the reverse), small sparse files that
declare huge or inconsistent datasets (refused from the metadata, before anything large is
allocated), sets and checkpoints of another system, checkpoints that are not checkpoints or
carry NaN weights, atomic writes (fsync, temporaries of killed writers cleaned up), export
formats (each one round-trips through mdtraj.load) and report outputs checked before writing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from pita import provenance
from pita.errors import PitaInputError
from pita.models import PitaModel, check_checkpoint_system, load_checkpoint, save_checkpoint
from pita.provenance import atomic_path, atomic_write_text, stale_temporaries
from pita.samples import MAX_VALUES, SampleSet, read_attrs

REPO = Path(__file__).resolve().parents[1]


def make_set(n=8, n_atoms=13, system="lj13", units="reduced", **kw):
    rng = np.random.default_rng(0)
    attrs = {"system": system, "temperature": 1.0, "units": units, "length_scale": 1.0,
             "n_energy_evals": 0, "n_energy_evals_total": 0}
    return SampleSet(rng.normal(size=(n, n_atoms, 3)).astype(np.float32), rng.normal(size=n), attrs, **kw)


def one_line_error(path, func, *fragments):
    """Run func(); it must raise PitaInputError, one line, naming `path` and every fragment."""
    with pytest.raises(PitaInputError) as exc:
        func()
    text = str(exc.value)
    assert "\n" not in text, text
    for frag in (str(path), *fragments):
        assert frag in text, (frag, text)
    return text


# ------------------------------------------------------------------------- groups vs datasets
def _rewrite(path: Path, edit) -> Path:
    with h5py.File(path, "a") as fh:
        edit(fh)
    return path


@pytest.mark.parametrize("name", ["positions", "energy", "forces", "log_weight"])
def test_dataset_stored_as_a_group(tmp_path, name):
    p = make_set(forces=np.zeros((8, 13, 3), np.float32), log_weight=np.zeros(8)).write(tmp_path / "s.h5")

    def edit(fh):
        del fh[name]
        fh.create_group(name).create_dataset("x", data=np.zeros(8))

    _rewrite(p, edit)
    one_line_error(p, lambda: SampleSet.read(p), f"'{name}' is an HDF5 group, expected a dataset")


def test_extra_stored_as_a_dataset_and_groups_inside_extra(tmp_path):
    p = make_set().write(tmp_path / "a.h5")
    _rewrite(p, lambda fh: fh.create_dataset("extra", data=np.arange(5.0)))
    one_line_error(p, lambda: SampleSet.read(p), "'extra' is a dataset, expected a group of datasets")
    q = make_set(extra={"ess_trace": np.ones(3)}).write(tmp_path / "b.h5")
    _rewrite(q, lambda fh: fh["extra"].create_group("nested"))
    one_line_error(q, lambda: SampleSet.read(q), "'extra/nested' is an HDF5 group, expected a dataset")
    r = make_set(extra={"ess_trace": np.ones(3)}).write(tmp_path / "c.h5")
    assert SampleSet.read(r).extra["ess_trace"].tolist() == [1.0, 1.0, 1.0]


def test_dangling_link_and_empty_dataspace(tmp_path):
    p = make_set().write(tmp_path / "a.h5")

    def edit(fh):
        del fh["energy"]
        fh["energy"] = h5py.SoftLink("/nowhere")

    _rewrite(p, edit)
    one_line_error(p, lambda: SampleSet.read(p), "'energy'")
    q = make_set().write(tmp_path / "b.h5")

    def edit2(fh):
        del fh["energy"]
        fh.create_dataset("energy", data=h5py.Empty("f8"))

    _rewrite(q, edit2)
    one_line_error(q, lambda: SampleSet.read(q), "dataset 'energy' has no data")


def test_unreadable_json_attribute(tmp_path):
    p = make_set().write(tmp_path / "a.h5")
    _rewrite(p, lambda fh: fh.attrs.__setitem__("ladder", "json:[1, 2"))
    one_line_error(p, lambda: SampleSet.read(p), "attribute 'ladder' cannot be read")
    one_line_error(p, lambda: read_attrs(p), "attribute 'ladder' cannot be read")
    one_line_error(tmp_path / "none.h5", lambda: read_attrs(tmp_path / "none.h5"), "file not found")


# ------------------------------------------------------------------ huge and inconsistent declarations
def _sparse(path: Path, n_pos: int, n_energy: int) -> Path:
    with h5py.File(path, "w") as fh:
        fh.create_dataset("positions", shape=(n_pos, 13, 3), dtype="f4", chunks=(min(n_pos, 1024), 13, 3))
        fh.create_dataset("energy", shape=(n_energy,), dtype="f8", chunks=(min(n_energy, 1024),))
        for k, v in {"system": "lj13", "temperature": 1.0, "units": "reduced", "length_scale": 1.0,
                     "n_energy_evals": 0, "n_energy_evals_total": 0}.items():
            fh.attrs[k] = v
    return path


def _peak_bytes(func) -> int:
    tracemalloc.start()
    try:
        func()
    except PitaInputError:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_tiny_sparse_file_declaring_a_huge_set_is_refused_before_reading(tmp_path):
    p = _sparse(tmp_path / "huge.h5", 200_000_000, 200_000_000)
    assert p.stat().st_size < 100_000  # nothing written: the file is small
    text = one_line_error(p, lambda: SampleSet.read(p), "200000000, 13, 3", f"{MAX_VALUES:,} values")
    assert "'positions'" in text
    assert _peak_bytes(lambda: SampleSet.read(p)) < 20_000_000


def test_inconsistent_declared_shapes_are_refused_before_reading(tmp_path):
    # 10 samples of positions but a declared 1e8-long energy (800 MB if it were read)
    p = _sparse(tmp_path / "mismatch.h5", 10, 100_000_000)
    one_line_error(p, lambda: SampleSet.read(p), "dataset 'energy' must have shape [10]", "[100000000]")
    assert _peak_bytes(lambda: SampleSet.read(p)) < 20_000_000
    q = make_set().write(tmp_path / "forces.h5")
    _rewrite(q, lambda fh: fh.create_dataset("forces", shape=(8, 12, 3), dtype="f4"))
    one_line_error(q, lambda: SampleSet.read(q), "dataset 'forces' must have shape [8, 13, 3]")
    # forces not loaded are still checked (the set is inconsistent either way)
    one_line_error(q, lambda: SampleSet.read(q, load_forces=False), "dataset 'forces' must have shape")


def test_bound_counts_extra_and_is_a_module_constant(tmp_path, monkeypatch):
    from pita import samples

    p = make_set(extra={"trace": np.zeros(100)}).write(tmp_path / "a.h5")
    monkeypatch.setattr(samples, "MAX_VALUES", 8 * 13 * 3 + 8 + 50)  # the set without extra fits
    one_line_error(p, lambda: SampleSet.read(p), "declare 420 values", "limited to 370 values")
    monkeypatch.setattr(samples, "MAX_VALUES", 8 * 13 * 3 + 8 + 100)
    assert len(SampleSet.read(p)) == 8


# ------------------------------------------------------------------------------ system checks
ALDP = SimpleNamespace(name="alanine_dipeptide", units="kJ/mol,nm", n_atoms=22, dim=66)


def test_set_of_another_system_is_refused(tmp_path):
    from pita.systems import load

    lj13 = load("lj13")
    p = make_set().write(tmp_path / "lj.h5")
    assert SampleSet.read(p, system=lj13).attrs["system"] == "lj13"
    one_line_error(p, lambda: SampleSet.read(p, system=ALDP),
                   "attribute 'system' is 'lj13' but --system is 'alanine_dipeptide'")
    s = SampleSet.read(p)
    one_line_error(p, lambda: s.check_system(str(p), ALDP, option="config system"),
                   "attribute 'system' is 'lj13' but config system is 'alanine_dipeptide'")
    # units and atom counts are always compared, names exactly (custom names of JSON specs)
    one_line_error(p, lambda: s.check_system(str(p), SimpleNamespace(name="lj13", units="kJ/mol,nm", n_atoms=13)),
                   "attribute 'units' is 'reduced' but --system 'lj13' uses 'kJ/mol,nm'")
    one_line_error(p, lambda: s.check_system(str(p), SimpleNamespace(name="lj13", units="reduced", n_atoms=55)),
                   "has 13 atoms but --system 'lj13' has 55 atoms")
    one_line_error(p, lambda: s.check_system(str(p), SimpleNamespace(name="LJ13", units="reduced", n_atoms=13)),
                   "attribute 'system' is 'lj13' but --system is 'LJ13'")
    one_line_error(p, lambda: SampleSet.read(p, units="kJ/mol,nm"), "attribute 'units' is 'reduced'")
    one_line_error(p, lambda: SampleSet.read(p, system="alanine_dipeptide"), "attribute 'system' is 'lj13'")
    custom = make_set(n_atoms=22, system="my_peptide", units="kJ/mol,nm").write(tmp_path / "custom.h5")
    SampleSet.read(custom, system=SimpleNamespace(name="my_peptide", units="kJ/mol,nm", n_atoms=22))
    # a density in R^d (no atoms): the dimension must match
    gmm = SampleSet(np.zeros((5, 2)), np.zeros(5), {**make_set().attrs, "system": "gmm"})
    gmm.check_system("g.h5", SimpleNamespace(name="gmm", units="reduced", n_atoms=None, dim=2))
    one_line_error("g.h5", lambda: gmm.check_system("g.h5", SimpleNamespace(name="gmm", units="reduced",
                                                                          n_atoms=None, dim=3)), "R^3")


# -------------------------------------------------------------------------------- checkpoints
def _model(n_atoms=22, name="alanine_dipeptide", length_scale=0.164, units="kJ/mol,nm") -> PitaModel:
    torch.manual_seed(0)
    return PitaModel({"dim": 3 * n_atoms, "n_atoms": n_atoms, "sd": 0.8, "temperature": 300.0, "sigma_min": 0.01,
                      "sigma_max": 8.0, "backbone": "mlp", "backbone_options": {"hidden": 8, "layers": 1, "embedding": 4},
                      "length_scale": length_scale, "units": units, "system": {"name": name}})


def test_checkpoint_that_is_not_one(tmp_path):
    txt = tmp_path / "notes.pt"
    txt.write_text("hello")
    one_line_error(txt, lambda: load_checkpoint(txt), "not a loadable model checkpoint")
    pickled = tmp_path / "obj.pt"
    torch.save({"format": "pita-model", "x": SimpleNamespace(a=1)}, pickled)  # not loadable with weights_only
    one_line_error(pickled, lambda: load_checkpoint(pickled), "not a loadable model checkpoint")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    one_line_error(other, lambda: load_checkpoint(other), "not a PITA model checkpoint")
    one_line_error(tmp_path, lambda: load_checkpoint(tmp_path), "is a folder")
    good = save_checkpoint(tmp_path / "good.pt", _model())
    payload = torch.load(good, weights_only=True)
    for label, change, fragment in [
        ("version", {"format_version": "one"}, "format_version must be an integer"),
        ("config", {"config": [1, 2]}, "checkpoint 'config' is list"),
        ("sd", {"config": {**payload["config"], "sd": -1.0}}, "'sd' must be a positive finite number"),
        ("dim", {"config": {**payload["config"], "dim": 65}}, "'dim' is 65 but 3 * n_atoms is 66"),
        ("weights", {"state_dict": {"a": 1}}, "weight 'a' is int, not a tensor"),
        ("meta", {"meta": "x"}, "checkpoint 'meta' is str"),
    ]:
        bad = tmp_path / f"bad_{label}.pt"
        torch.save({**payload, **change}, bad)
        one_line_error(bad, lambda: load_checkpoint(bad), fragment)


def test_checkpoint_with_nan_or_inf_weights(tmp_path):
    model = _model()
    sd = model.state_dict()
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 2)
    sd = {k: v.clone() for k, v in sd.items()}
    sd[key].view(-1)[0] = float("nan")
    sd[key].view(-1)[1] = float("inf")
    p = save_checkpoint(tmp_path / "nan.pt", model, state_dict=sd)
    one_line_error(p, lambda: load_checkpoint(p), f"weight '{key}' has 2 NaN or infinite value(s)")


def test_checkpoint_of_another_system(tmp_path):
    from pita.systems import load

    lj13 = load("lj13")
    aldp_ckpt = save_checkpoint(tmp_path / "aldp.pt", _model())
    model = load_checkpoint(aldp_ckpt)
    assert check_checkpoint_system(model, ALDP_SYSTEM, aldp_ckpt) is model
    one_line_error(aldp_ckpt, lambda: check_checkpoint_system(model, lj13, aldp_ckpt),
                   "checkpoint is for system 'alanine_dipeptide' but --system is 'lj13'")
    # unnamed checkpoints are still compared by atoms, units, length scale
    unnamed = _model(n_atoms=13, name=None, length_scale=1.0, units="reduced")
    unnamed.config["system"] = None
    check_checkpoint_system(unnamed, lj13, "u.pt")
    one_line_error("u.pt", lambda: check_checkpoint_system(unnamed, SimpleNamespace(
        name="lj55", units="reduced", n_atoms=55, dim=165, mean_free=True, length_scale=1.0), "u.pt"),
        "checkpoint is for 13 atoms but --system 'lj55' has 55 atoms")
    one_line_error("u.pt", lambda: check_checkpoint_system(unnamed, SimpleNamespace(
        name="lj13", units="reduced", n_atoms=13, dim=39, mean_free=True, length_scale=2.0), "u.pt"),
        "length scale 1 but --system 'lj13' uses 2")
    one_line_error("u.pt", lambda: check_checkpoint_system(unnamed, SimpleNamespace(
        name="x", units="kJ/mol,nm", n_atoms=13, dim=39, mean_free=True, length_scale=1.0), "u.pt", option="config"),
        "checkpoint has units 'reduced' but config 'x' uses 'kJ/mol,nm'")


ALDP_SYSTEM = SimpleNamespace(name="alanine_dipeptide", units="kJ/mol,nm", n_atoms=22, dim=66, mean_free=True,
                              length_scale=0.164)


def test_same_name_other_force_field_is_another_system(tmp_path):
    """A spec with the shipped PDB and another force field has the shipped molecule's name: its
    energies are another system's, so a checkpoint or sample set recording the force field is refused
    (one without the record, from before, is compared by name as before)."""
    amber99 = SimpleNamespace(**vars(ALDP_SYSTEM), forcefield=["amber99sbildn.xml", "amber99_obc.xml"])
    amber14 = SimpleNamespace(**vars(ALDP_SYSTEM), forcefield=["amber14-all.xml", "implicit/obc1.xml"])
    model = _model()
    model.config["system"] = {"name": "alanine_dipeptide", "forcefield": amber99.forcefield}
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    model = load_checkpoint(ckpt)
    assert check_checkpoint_system(model, amber99, ckpt) is model
    one_line_error(ckpt, lambda: check_checkpoint_system(model, amber14, ckpt),
                   "checkpoint was trained with force field ['amber99sbildn.xml', 'amber99_obc.xml'] but --system "
                   "'alanine_dipeptide' uses ['amber14-all.xml', 'implicit/obc1.xml']")
    attrs = {"system": "alanine_dipeptide", "temperature": 300.0, "units": "kJ/mol,nm", "length_scale": 0.164,
             "n_energy_evals": 1, "n_energy_evals_total": 1, "rung": 0}
    x = np.zeros((3, 22, 3), dtype=np.float32)
    recorded = SampleSet(x, np.zeros(3), {**attrs, "forcefield": amber99.forcefield}).write(tmp_path / "s.h5")
    SampleSet.read(recorded).check_system("s.h5", amber99)
    with pytest.raises(PitaInputError, match=r"attribute 'forcefield' is \['amber99sbildn.xml', 'amber99_obc.xml'\] "
                                             r"but --system 'alanine_dipeptide' uses \['amber14-all.xml'"):
        SampleSet.read(recorded).check_system("s.h5", amber14)
    old = SampleSet(x, np.zeros(3), attrs).write(tmp_path / "old.h5")
    SampleSet.read(old).check_system("old.h5", amber14)
    for bad in (1.5, "amber99sbildn.xml"):
        odd = SampleSet(x, np.zeros(3), {**attrs, "forcefield": bad}).write(tmp_path / "odd.h5")
        with pytest.raises(PitaInputError, match="attribute 'forcefield' must be a list of force-field file names"):
            SampleSet.read(odd).check_system("odd.h5", amber99)


# ------------------------------------------------------------------------------- atomic writes
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    host = provenance._host_tag()
    dead = _dead_pid()
    target = tmp_path / "out.h5"
    stale = tmp_path / f".out.h5.{host}-{dead}.abc12345.h5.tmp"
    alive = tmp_path / f".out.h5.{host}-{os.getpid()}.zzz99999.h5.tmp"  # a running writer (this process)
    other_host = tmp_path / f".out.h5.elsewhere-{dead}.abc12345.h5.tmp"  # cannot check a pid of another node
    other_output = tmp_path / f".other.h5.{host}-{dead}.abc12345.h5.tmp"  # another output's temporary
    unrelated = tmp_path / "notes.txt"
    for f in (stale, alive, other_host, other_output, unrelated):
        f.write_text("x")
    assert stale_temporaries(target) == [stale]
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and not stale.exists()
    assert alive.exists() and other_host.exists() and other_output.exists() and unrelated.read_text() == "x"


def test_writer_killed_by_sigkill_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "result.txt"
    code = ("import sys, time\n"
            "from pita.provenance import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_text('half')\n"
            "    print('writing', flush=True)\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True,
                            cwd=str(REPO))
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = [p for p in tmp_path.iterdir()]
    assert not target.exists() and len(left) == 1 and left[0].name.startswith(".result.txt.")
    (tmp_path / "keep.txt").write_text("keep")
    atomic_write_text(target, "done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "result.txt"]
    assert target.read_text() == "done"


def test_atomic_path_fsyncs_file_then_folder(tmp_path, monkeypatch):
    calls = []
    real = os.fsync

    def spy(fd):
        calls.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    target = tmp_path / "f.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
        tmp_name = str(tmp)
    assert len(calls) == 2
    if os.path.exists("/proc/self/fd"):
        assert calls == [tmp_name, str(tmp_path)]


# ------------------------------------------------------------------------------------- export
FORMAT_CASES = ["dcd", "xtc", "trr", "nc", "netcdf", "ncdf", "xyz", "mdcrd", "crd", "pdb", "pdb.gz", "gro", "h5"]


@pytest.mark.filterwarnings("ignore:.*netCDF4:UserWarning")
@pytest.mark.parametrize("ext", FORMAT_CASES)
def test_export_formats_round_trip_through_mdtraj(tmp_path, ext, capsys):
    import importlib.util

    import mdtraj as md

    from pita.cli import main
    from pita.commands import export

    assert set(f".{e}" for e in FORMAT_CASES) == set(export.FORMATS)
    s = make_set(n=4, n_atoms=5, system="lj5")
    s.positions = (s.positions * 0.5 + 2.0).astype(np.float32)
    s.write(tmp_path / "s.h5")
    out = tmp_path / f"t.{ext}"
    rc = main(["export", "--samples", str(tmp_path / "s.h5"), "--out", str(out)])
    err = capsys.readouterr().err
    if ext == "h5" and importlib.util.find_spec("tables") is None:
        assert rc == 2 and not out.exists()
        assert err.count("\n") == 1 and "needs the Python package 'tables'" in err and ".dcd" in err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]
        return
    assert rc == 0, err
    fmt = export.FORMATS[f".{ext}"]
    pdb = tmp_path / "t.pdb"
    top = None if fmt.has_topology else str(pdb)
    assert pdb.exists() == (not fmt.has_topology or ext == "pdb")
    t = md.load(str(out), top=top) if top else md.load(str(out))
    assert t.n_frames == 4 and t.n_atoms == 5
    tol = 1e-3 if ext == "gro" else 1e-4  # .gro keeps 3 decimals (nm), PDB/xyz/mdcrd 3 in Angstrom
    np.testing.assert_allclose(t.xyz, s.positions, atol=tol)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


@pytest.mark.filterwarnings("ignore:.*netCDF4:UserWarning")
def test_export_several_formats_one_topology(tmp_path, capsys):
    """As the workflow's export rule calls it: several --out, one --pdb topology; a path given twice
    is refused before anything is written."""
    import mdtraj as md

    from pita.cli import main

    s = make_set(n=3, n_atoms=5, system="lj5")
    s.write(tmp_path / "s.h5")
    outs = [str(tmp_path / f"t.{e}") for e in ("dcd", "xtc", "pdb")]
    assert main(["export", "--samples", str(tmp_path / "s.h5"), "--out", *outs, "--pdb", str(tmp_path / "t.topology.pdb")]) == 0
    top = md.load(str(tmp_path / "t.topology.pdb"))
    assert top.n_frames == 1 and top.n_atoms == 5
    for path in outs:
        t = md.load(path) if path.endswith(".pdb") else md.load(path, top=str(tmp_path / "t.topology.pdb"))
        np.testing.assert_allclose(t.xyz, s.positions, atol=1e-3)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = main(["export", "--samples", str(tmp_path / "s.h5"), "--out", str(tmp_path / "u.dcd"), str(tmp_path / "u.pdb")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--pdb" in err and "the same file as --out" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_export_unknown_format_names_the_supported_list(tmp_path, capsys):
    from pita.cli import main

    make_set().write(tmp_path / "s.h5")
    rc = main(["export", "--samples", str(tmp_path / "s.h5"), "--out", str(tmp_path / "t.mol2")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "unknown trajectory format '.mol2'" in err and ".dcd, .xtc" in err and ".pdb.gz" in err
    rc = main(["export", "--samples", str(tmp_path / "s.h5"), "--out", str(tmp_path / "t.dcd"),
               "--pdb", str(tmp_path / "top.xtc")])
    err = capsys.readouterr().err
    assert rc == 2 and "--pdb" in err and "must end in .pdb or .pdb.gz" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_export_system_of_another_name_is_refused(tmp_path, capsys):
    from pita.cli import main

    make_set(system="lj13_custom").write(tmp_path / "s.h5")
    rc = main(["export", "--samples", str(tmp_path / "s.h5"), "--out", str(tmp_path / "t.pdb"), "--system", "lj13"])
    err = capsys.readouterr().err
    assert rc == 2 and "attribute 'system' is 'lj13_custom' but --system is 'lj13'" in err
    assert not (tmp_path / "t.pdb").exists()


# ------------------------------------------------------------------------------------- report
def test_report_out_is_a_folder_leaves_no_summary(tmp_path, capsys):
    from pita.cli import main

    m = tmp_path / "metrics.json"
    m.write_text('{"rung": 0, "temperature": 300.0, "energy_w1": 0.1}')
    (tmp_path / "report.html").mkdir()
    rc = main(["report", "--metrics", str(m), "--out", str(tmp_path / "report.html"),
               "--summary", str(tmp_path / "summary.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--out" in err and "is a folder" in err
    assert not (tmp_path / "summary.csv").exists()
    # the library function checks too, and the same file for both outputs is refused
    from pita.report import write_report

    one_line_error(tmp_path / "report.html", lambda: write_report([m], out_html=tmp_path / "report.html",
                                                                  summary_csv=tmp_path / "summary.csv"), "--out")
    one_line_error("same.csv", lambda: write_report([m], out_html=tmp_path / "same.csv",
                                                    summary_csv=tmp_path / "same.csv"), "the same file as --out")
    assert not (tmp_path / "summary.csv").exists() and not (tmp_path / "same.csv").exists()
    assert main(["report", "--metrics", str(m), "--summary", str(tmp_path / "summary.csv")]) == 0
    assert (tmp_path / "summary.csv").read_text().startswith("rung,")


def test_read_timing_is_metadata_only(tmp_path):
    # a 2e8-sample declaration is refused in well under a second (nothing is read)
    p = _sparse(tmp_path / "huge.h5", 200_000_000, 200_000_000)
    t0 = time.perf_counter()
    with pytest.raises(PitaInputError):
        SampleSet.read(p)
    assert time.perf_counter() - t0 < 2.0
