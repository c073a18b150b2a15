"""Sample-set contract: round trip, atomic writes, and every validation error."""
import os

import h5py
import numpy as np
import pytest

from pita.errors import PitaInputError
from pita.provenance import atomic_path, base_attrs, config_digest
from pita.samples import SampleSet, SampleSetError, read_attrs


def make_set(n=10, n_atoms=4, **kw):
    rng = np.random.default_rng(0)
    attrs = {"system": "lj4", "temperature": 300.0, "units": "kJ/mol,nm", "length_scale": 0.2,
             "n_energy_evals": 10, "n_energy_evals_total": 110, "rung": 0, **base_attrs("md", {"a": 1}, seed=3)}
    attrs.update(kw.pop("attrs", {}))
    fields = dict(positions=rng.normal(size=(n, n_atoms, 3)).astype(np.float32),
                  energy=rng.normal(size=n), forces=rng.normal(size=(n, n_atoms, 3)).astype(np.float32),
                  log_weight=rng.normal(size=n), trajectory=np.arange(n, dtype=np.int32) % 2,
                  time_ps=np.arange(n, dtype=np.float64))
    fields.update(kw)
    return SampleSet(attrs=attrs, **fields)


def test_round_trip(tmp_path):
    s = make_set()
    s.extra["ess_trace"] = np.linspace(1, 0.5, 7)
    p = s.write(tmp_path / "a.h5")
    r = SampleSet.read(p, temperature=300.0, n_atoms=4, system="lj4")
    for name in ("positions", "energy", "forces", "log_weight", "trajectory", "time_ps"):
        np.testing.assert_array_equal(getattr(r, name), getattr(s, name))
    assert r.positions.dtype == np.float32 and r.energy.dtype == np.float64
    assert r.trajectory.dtype == np.int32
    assert r.attrs["seed"] == 3 and r.attrs["config_digest"] == config_digest({"a": 1})
    assert r.attrs["n_energy_evals_total"] == 110
    np.testing.assert_allclose(r.extra["ess_trace"], s.extra["ess_trace"])
    assert read_attrs(p)["producing_step"] == "md"
    # no temporaries left beside the output
    assert sorted(os.listdir(tmp_path)) == ["a.h5"]


def test_weights_and_ess():
    s = make_set(log_weight=np.log(np.array([1.0, 1, 1, 1, 0, 0, 0, 0, 0, 0]) + 1e-300))
    np.testing.assert_allclose(s.weights()[:4], 0.25)
    assert s.ess() == pytest.approx(4.0)
    s2 = make_set(log_weight=None)
    assert s2.ess() == pytest.approx(10.0)


def test_dict_attrs_round_trip(tmp_path):
    s = make_set(attrs={"ladder": [1200.0, 300.0], "settings": {"x": 1}})
    r = SampleSet.read(s.write(tmp_path / "b.h5"))
    assert r.attrs["ladder"] == [1200.0, 300.0] and r.attrs["settings"] == {"x": 1}


BAD_SETS = [
    ("nan positions", dict(positions=np.full((10, 4, 3), np.nan, dtype=np.float32)), "'positions' has 10 sample"),
    ("inf energy", dict(energy=np.array([np.inf] + [0.0] * 9)), "'energy' has 1 sample"),
    ("wrong positions shape", dict(positions=np.zeros((10, 4, 2), np.float32), forces=None), "shape [N, n_atoms, 3]"),
    ("energy length", dict(energy=np.zeros(9)), "'energy' must have shape [10]"),
    ("forces shape", dict(forces=np.zeros((10, 5, 3), np.float32)), "'forces' must have shape"),
    ("nan log weight", dict(log_weight=np.array([np.nan] * 10)), "'log_weight' has NaN"),
    ("all -inf log weight", dict(log_weight=np.full(10, -np.inf)), "no finite value"),
    ("empty", dict(positions=np.zeros((0, 4, 3), np.float32), energy=np.zeros(0), forces=None, log_weight=None,
                   trajectory=None, time_ps=None), "empty"),
    ("bad units", dict(attrs={"units": "kcal/mol,A"}), "attribute 'units'"),
    ("negative temperature", dict(attrs={"temperature": -5.0}), "'temperature' must be a positive"),
    ("non-numeric temperature", dict(attrs={"temperature": "hot"}), "'temperature' is not a number"),
    ("zero length scale", dict(attrs={"length_scale": 0.0}), "'length_scale' must be positive"),
    ("angstrom-like scale", dict(positions=np.full((10, 4, 3), 1.0, np.float32) * np.arange(4)[None, :, None] * 1e4),
     "expected nm"),
]


@pytest.mark.parametrize("label,fields,message", BAD_SETS, ids=[b[0] for b in BAD_SETS])
def test_validation_errors(tmp_path, label, fields, message):
    s = make_set(**fields)
    out = tmp_path / "bad.h5"
    with pytest.raises(SampleSetError) as exc:
        s.write(out)
    text = str(exc.value)
    assert message in text and str(out) in text and "\n" not in text
    assert not out.exists() and os.listdir(tmp_path) == []


def test_missing_attribute(tmp_path):
    s = make_set()
    del s.attrs["n_energy_evals_total"]
    with pytest.raises(SampleSetError, match="attribute 'n_energy_evals_total' is missing"):
        s.write(tmp_path / "x.h5")


def test_read_errors(tmp_path):
    with pytest.raises(SampleSetError, match="file not found"):
        SampleSet.read(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(SampleSetError, match="not a readable HDF5"):
        SampleSet.read(junk)
    p = make_set().write(tmp_path / "ok.h5")
    with h5py.File(p, "a") as fh:
        del fh["energy"]
    with pytest.raises(SampleSetError, match="required dataset 'energy' is missing"):
        SampleSet.read(p)
    p = make_set().write(tmp_path / "ok2.h5")
    with pytest.raises(SampleSetError, match="'temperature' is 300 but 555.52 was expected"):
        SampleSet.read(p, temperature=555.52)
    with pytest.raises(SampleSetError, match="has 4 atoms but the system has 22"):
        SampleSet.read(p, n_atoms=22)
    assert issubclass(SampleSetError, PitaInputError)


def test_atomic_path_cleans_up_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and os.listdir(tmp_path) == []


def test_config_digest_is_order_independent():
    assert config_digest({"a": 1, "b": [1, 2]}) == config_digest({"b": [1, 2], "a": 1})
    assert config_digest({"a": 1}) != config_digest({"a": 2})
