"""The shipped peptide structures: load in OpenMM with both force fields, atom order,
phi/psi indices, L chirality (checked independently of pita.chirality), minimised energy."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

mdtraj = pytest.importorskip("mdtraj")
openmm = pytest.importorskip("openmm")
from openmm import app, unit  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
ALDP = DATA / "alanine_dipeptide.pdb"
ALA3 = DATA / "alanine_tripeptide.pdb"
OPENMMTOOLS_ALDP = Path("/tmp/omt/x/openmmtools/data/alanine-dipeptide-gbsa/alanine-dipeptide.pdb")

FORCEFIELDS = [("amber99sbildn.xml", "amber99_obc.xml"), ("amber14-all.xml", "implicit/obc1.xml")]

ACE = ["HH31", "CH3", "HH32", "HH33", "C", "O"]
ALA = ["N", "H", "CA", "HA", "CB", "HB1", "HB2", "HB3", "C", "O"]
NME = ["N", "H", "C", "H1", "H2", "H3"]


def _energy_forces(pdb_path: Path, ffs) -> tuple[int, float, np.ndarray]:
    pdb = app.PDBFile(str(pdb_path))
    system = app.ForceField(*ffs).createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pdb.positions)
    st = ctx.getState(getEnergy=True, getForces=True)
    e = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    f = np.asarray(st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    return system.getNumParticles(), e, f


def _pdb_names(path: Path) -> list[tuple[str, str]]:
    """(residue name, atom name) straight from the file's columns, before any name mapping."""
    out = []
    for line in path.read_text().splitlines():
        if line.startswith(("ATOM", "HETATM")):
            out.append((line[17:20].strip(), line[12:16].strip()))
    return out


def _dihedral_deg(a, b, c, d) -> float:
    b0, b1, b2 = a - b, c - b, d - c
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1) * b1
    w = b2 - np.dot(b2, b1) * b1
    return math.degrees(math.atan2(np.dot(np.cross(b1, v), w), np.dot(v, w)))


def _corn_clockwise(x: np.ndarray, ca: int, ha: int, c: int, cb: int, n: int) -> bool:
    """Hand check of the CORN rule: looking from H-alpha towards C-alpha, is CO -> R -> N clockwise?

    Project C, CB, N onto the plane perpendicular to the HA->CA view axis, in a 2-D frame
    whose normal points back at the viewer, and sum the signed turning of the triangle.
    """
    view = x[ca] - x[ha]
    view = view / np.linalg.norm(view)
    toward_viewer = -view
    e1 = np.cross(toward_viewer, [1.0, 0.0, 0.0])
    if np.linalg.norm(e1) < 1e-6:
        e1 = np.cross(toward_viewer, [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(toward_viewer, e1)  # (e1, e2, toward_viewer) right-handed: counter-clockwise as seen
    pts = [np.array([np.dot(x[i] - x[ca], e1), np.dot(x[i] - x[ca], e2)]) for i in (c, cb, n)]
    area2 = sum(p[0] * q[1] - p[1] * q[0] for p, q in zip(pts, pts[1:] + pts[:1]))
    return area2 < 0  # negative signed area = clockwise for the viewer


@pytest.mark.parametrize("path,n_atoms", [(ALDP, 22), (ALA3, 32)])
@pytest.mark.parametrize("ffs", FORCEFIELDS, ids=["amber99sbildn_obc", "amber14_obc1"])
def test_loads_in_openmm(path, n_atoms, ffs):
    n, e, f = _energy_forces(path, ffs)
    assert n == n_atoms
    assert np.isfinite(e) and np.all(np.isfinite(f))
    # a minimised capped alanine peptide in implicit solvent: around -100 to -150 kJ/mol
    assert -300.0 < e < 0.0, e


@pytest.mark.parametrize("path,n_atoms", [(ALDP, 22), (ALA3, 32)])
def test_minimised(path, n_atoms):
    n, e, f = _energy_forces(path, FORCEFIELDS[0])
    # the build minimises with amber99sbildn + obc; the PDB's 0.001 A rounding leaves forces of tens of kJ/mol/nm
    assert np.abs(f).max() < 100.0
    assert np.sqrt((f ** 2).mean()) < 30.0


def test_atom_order():
    assert _pdb_names(ALDP) == ([("ACE", a) for a in ACE] + [("ALA", a) for a in ALA] + [("NME", a) for a in NME])
    assert _pdb_names(ALA3) == ([("ACE", a) for a in ACE] + [("ALA", a) for a in ALA] * 2
                                + [("NME", a) for a in NME])
    t = mdtraj.load(str(ALDP))
    assert t.n_atoms == 22 and t.n_residues == 3
    assert [r.name for r in t.topology.residues] == ["ACE", "ALA", "NME"]
    assert t.topology.n_bonds == 21


def test_phi_psi_indices():
    t = mdtraj.load(str(ALDP))
    phi_idx, phi = mdtraj.compute_phi(t)
    psi_idx, psi = mdtraj.compute_psi(t)
    assert phi_idx.tolist() == [[4, 6, 8, 14]]
    assert psi_idx.tolist() == [[6, 8, 14, 16]]
    # starts in the C7eq/beta basin
    assert -180.0 < np.degrees(phi[0, 0]) < -45.0
    assert 50.0 < np.degrees(psi[0, 0]) <= 180.0

    t3 = mdtraj.load(str(ALA3))
    phi_idx, phi = mdtraj.compute_phi(t3)
    psi_idx, psi = mdtraj.compute_psi(t3)
    assert phi_idx.tolist() == [[4, 6, 8, 14], [14, 16, 18, 24]]
    assert psi_idx.tolist() == [[6, 8, 14, 16], [16, 18, 24, 26]]
    assert np.all(np.degrees(phi) < -45.0) and np.all(np.degrees(psi) > 50.0)


def _alanine_rows(path: Path):
    t = mdtraj.load(str(path))
    rows = []
    for res in t.topology.residues:
        if res.name == "ALA":
            idx = {a.name: a.index for a in res.atoms}
            rows.append(idx)
    return t.xyz[0].astype(np.float64), rows


@pytest.mark.parametrize("path", [ALDP, ALA3])
def test_l_chirality_hand_check(path):
    x, rows = _alanine_rows(path)
    assert rows
    for idx in rows:
        # virtual (improper) dihedral CA-N-C-CB: about +34 degrees for L, -34 for D
        zeta = _dihedral_deg(x[idx["CA"]], x[idx["N"]], x[idx["C"]], x[idx["CB"]])
        assert 20.0 < zeta < 50.0, zeta
        assert _corn_clockwise(x, idx["CA"], idx["HA"], idx["C"], idx["CB"], idx["N"])
        # and the mirror image fails both checks
        assert _dihedral_deg(-x[idx["CA"]], -x[idx["N"]], -x[idx["C"]], -x[idx["CB"]]) < 0
        assert not _corn_clockwise(-x, idx["CA"], idx["HA"], idx["C"], idx["CB"], idx["N"])


@pytest.mark.skipif(not OPENMMTOOLS_ALDP.exists(), reason="openmmtools reference PDB not available")
def test_hand_check_convention_on_openmmtools_reference():
    """The openmmtools ALDP is L-alanine: the hand checks above must call it L too."""
    x, rows = _alanine_rows(OPENMMTOOLS_ALDP)
    (idx,) = rows
    assert 20.0 < _dihedral_deg(x[idx["CA"]], x[idx["N"]], x[idx["C"]], x[idx["CB"]]) < 50.0
    assert _corn_clockwise(x, idx["CA"], idx["HA"], idx["C"], idx["CB"], idx["N"])
    ours, _ = _alanine_rows(ALDP)
    assert len(ours) == len(x)


def test_build_script_reproduces(tmp_path):
    """Regenerating into a temporary folder gives the committed structures."""
    script = DATA / "build_peptides.py"
    subprocess.run([sys.executable, str(script), "--outdir", str(tmp_path)], check=True, capture_output=True)
    for name in ("alanine_dipeptide.pdb", "alanine_tripeptide.pdb"):
        assert _pdb_names(tmp_path / name) == _pdb_names(DATA / name)
        new = mdtraj.load(str(tmp_path / name)).xyz[0]
        old = mdtraj.load(str(DATA / name)).xyz[0]
        assert np.abs(new - old).max() < 5e-3  # nm; bit-identical on the same platform
