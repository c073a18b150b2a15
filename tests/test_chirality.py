"""pita.chirality: centres, signs, mirroring and the keep/mirror/drop repair."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

mdtraj = pytest.importorskip("mdtraj")

from pita.chirality import (ChiralityChecker, chiral_centers, chirality_signs, fix_chirality,  # noqa: E402
                            is_correct, mirror, reference_signs)

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def aldp():
    t = mdtraj.load(str(DATA / "alanine_dipeptide.pdb"))
    return t.topology, t.xyz[0].astype(np.float64)


@pytest.fixture(scope="module")
def ala3():
    t = mdtraj.load(str(DATA / "alanine_tripeptide.pdb"))
    return t.topology, t.xyz[0].astype(np.float64)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _swap_ha_cb(x: np.ndarray, top, residue_index: int) -> np.ndarray:
    """Invert one centre by exchanging the HA and CB positions of that residue."""
    res = list(top.residues)[residue_index]
    idx = {a.name: a.index for a in res.atoms}
    y = x.copy()
    y[..., [idx["HA"], idx["CB"]], :] = x[..., [idx["CB"], idx["HA"]], :]
    return y


def test_centers(aldp, ala3):
    top, _ = aldp
    c = chiral_centers(top)
    assert c.dtype == np.int64 and c.tolist() == [[8, 6, 14, 10]]  # (CA, N, C, CB)
    c3 = chiral_centers(ala3[0])
    assert c3.tolist() == [[8, 6, 14, 10], [18, 16, 24, 20]]
    # an OpenMM topology gives the same rows
    assert chiral_centers(top.to_openmm()).tolist() == c.tolist()


def test_glycine_has_no_centre():
    top = mdtraj.Topology()
    ch = top.add_chain()
    res = top.add_residue("GLY", ch)
    for name, el in (("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O")):
        top.add_atom(name, mdtraj.element.get_by_symbol(el), res)
    c = chiral_centers(top)
    assert c.shape == (0, 4)
    x = np.random.default_rng(0).normal(size=(5, 4, 3))
    assert chirality_signs(x, c).shape == (5, 0)
    assert is_correct(x, c, np.zeros(0)).all()
    xf, keep, n_m, n_d = fix_chirality(x, c, np.zeros(0))
    assert keep.all() and n_m == 0 and n_d == 0 and np.array_equal(xf, x)
    xt = torch.as_tensor(x)
    xf, keep, n_m, n_d = fix_chirality(xt, c, np.zeros(0))
    assert bool(keep.all()) and n_m == 0 and n_d == 0


def test_reference_is_l(aldp, ala3):
    for top, x in (aldp, ala3):
        ref = reference_signs(x, chiral_centers(top))
        assert np.all(ref == 1)  # (N-CA).((C-CA)x(CB-CA)) > 0 for L


def test_mirror_detected_and_fixed_numpy(aldp):
    top, x = aldp
    c = chiral_centers(top)
    ref = reference_signs(x, c)
    xm = mirror(x[None])
    assert np.array_equal(xm, -x[None])
    assert not is_correct(xm, c, ref)[0]
    assert is_correct(x[None], c, ref)[0]
    xf, keep, n_m, n_d = fix_chirality(xm, c, ref)
    assert keep.tolist() == [True] and n_m == 1 and n_d == 0
    assert np.allclose(xf, x[None])
    assert is_correct(xf, c, ref).all()


def test_mirror_detected_and_fixed_torch(aldp):
    top, x = aldp
    c = chiral_centers(top)
    ref = reference_signs(torch.as_tensor(x), c)
    xt = torch.as_tensor(x, dtype=torch.float32)[None].repeat(3, 1, 1)
    xt[1] = mirror(xt[1])
    assert isinstance(mirror(xt), torch.Tensor)
    s = chirality_signs(xt, c)
    assert isinstance(s, torch.Tensor) and s.shape == (3, 1) and s[:, 0].tolist() == [1.0, -1.0, 1.0]
    ok = is_correct(xt, c, ref)
    assert isinstance(ok, torch.Tensor) and ok.tolist() == [True, False, True]
    xf, keep, n_m, n_d = fix_chirality(xt, c, ref)
    assert isinstance(xf, torch.Tensor) and xf.dtype == torch.float32 and xf.shape == xt.shape
    assert keep.tolist() == [True, True, True] and n_m == 1 and n_d == 0
    assert torch.allclose(xf[1], torch.as_tensor(x, dtype=torch.float32))
    assert torch.equal(xf[0], xt[0]) and torch.equal(xf[2], xt[2])


def test_rigid_motion_keeps_chirality(aldp, ala3):
    rng = np.random.default_rng(1)
    for top, x in (aldp, ala3):
        c = chiral_centers(top)
        ref = reference_signs(x, c)
        batch = np.stack([x @ _rotation(rng).T + rng.normal(scale=3.0, size=3) for _ in range(16)])
        assert is_correct(batch, c, ref).all()
        xf, keep, n_m, n_d = fix_chirality(batch, c, ref)
        assert keep.all() and n_m == 0 and n_d == 0 and np.array_equal(xf, batch)
        # an improper transformation (rotation times reflection) inverts every centre
        refl = batch * np.array([1.0, 1.0, -1.0])
        assert not is_correct(refl, c, ref).any()
        _, keep, n_m, n_d = fix_chirality(refl, c, ref)
        assert keep.all() and n_m == 16 and n_d == 0


def test_normalised_flat_coordinates(aldp):
    """Works on the model's flat, mean-free, scaled layout (B, 3 n_atoms)."""
    top, x = aldp
    c = chiral_centers(top)
    ref = reference_signs(x, c)
    xt = torch.as_tensor(x)[None]
    flat = ((xt - xt.mean(dim=1, keepdim=True)) / 0.164).reshape(1, -1)
    flat = torch.cat([flat, -flat])
    assert is_correct(flat, c, ref).tolist() == [True, False]
    xf, keep, n_m, n_d = fix_chirality(flat, c, ref)
    assert xf.shape == flat.shape and n_m == 1 and n_d == 0
    assert torch.allclose(xf[1], flat[0])
    # single configuration (n_atoms, 3)
    assert chirality_signs(x, c).shape == (1, 1)
    xs, keep, n_m, _ = fix_chirality(-x, c, ref)
    assert xs.shape == x.shape and n_m == 1 and np.allclose(xs, x)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_tripeptide_partial_inversion_dropped(ala3, lib):
    top, x = ala3
    c = chiral_centers(top)
    ref = reference_signs(x, c)
    one_inverted_a = _swap_ha_cb(x, top, 1)  # residue 1 = first ALA
    one_inverted_b = _swap_ha_cb(x, top, 2)  # residue 2 = second ALA
    both_inverted = _swap_ha_cb(one_inverted_a, top, 2)  # D-D: fixable by mirroring
    assert chirality_signs(one_inverted_a, c).tolist() == [[-1.0, 1.0]]
    assert chirality_signs(one_inverted_b, c).tolist() == [[1.0, -1.0]]
    batch = np.stack([x, one_inverted_a, -x, one_inverted_b, both_inverted, -one_inverted_a, x + 1.0])
    # expected:        keep  drop            mirror  drop           mirror        drop               keep
    if lib == "torch":
        batch = torch.as_tensor(batch)
    xf, keep, n_m, n_d = fix_chirality(batch, c, ref)
    keep_list = keep.tolist()
    assert keep_list == [True, False, True, False, True, False, True]
    assert n_m == 2 and n_d == 3
    assert isinstance(n_m, int) and isinstance(n_d, int)
    assert is_correct(xf[keep], c, ref).all()
    xf_np = xf.numpy() if lib == "torch" else xf
    assert np.allclose(xf_np[2], x)
    assert np.allclose(xf_np[4], -both_inverted)
    assert np.allclose(xf_np[0], x) and np.allclose(xf_np[6], x + 1.0)
    # the dropped ones are left untouched (selected out by keep)
    assert np.allclose(xf_np[1], one_inverted_a)


def test_checker_from_system(ala3):
    top, x = ala3
    system = SimpleNamespace(topology=top, reference_positions=x.astype(np.float32))
    chk = ChiralityChecker.from_system(system)
    assert chk.n_centers == 2 and chk.ref_signs.tolist() == [1, 1]
    batch = torch.as_tensor(np.stack([x, -x, _swap_ha_cb(x, top, 2)]), dtype=torch.float32)
    assert chk.is_correct(batch).tolist() == [True, False, False]
    assert chk.wrong_fraction(batch) == pytest.approx(2 / 3)
    _, keep, n_m, n_d = chk.fix(batch)
    assert keep.tolist() == [True, True, False] and (n_m, n_d) == (1, 1)
    assert chk.signs(batch).shape == (3, 2)


def test_bad_shape_rejected(aldp):
    top, x = aldp
    with pytest.raises(ValueError, match="shape"):
        chirality_signs(np.zeros((2, 3, 4, 3)), chiral_centers(top))
