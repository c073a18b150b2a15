#!/usr/bin/env python
"""Build capped alanine peptides (ACE-(ALA)n-NME) from internal coordinates and minimise them.

Usage (from the repository root):

    python data/build_peptides.py                 # writes data/alanine_dipeptide.pdb and data/alanine_tripeptide.pdb
    python data/build_peptides.py --outdir DIR    # somewhere else
    python data/build_peptides.py --no-minimize   # raw internal-coordinate geometry

Geometry: every atom is placed from three already placed atoms with the natural extension
reference frame (NeRF): bond length to the last one, bond angle, dihedral. Standard values
(Engh-Huber-like backbone, tetrahedral sp3 hydrogens), trans peptide bonds (omega = 180),
L-amino acids: the virtual dihedral CA-N-C-CB is about +34 degrees, equivalently
(N - CA) . ((C - CA) x (CB - CA)) > 0.  Backbone dihedrals start in the C7eq/beta basin at
phi = -80, psi = 150 degrees. (With amber99sbildn + OBC there is no separate minimum near
psi = 75: a start at (-80, 75) slides to alpha_R at (-77, -15) on minimisation, while
(-80, 150) stays in the C7eq/beta basin and ends near (-74, 155).)

Atom order per residue (the usual one, e.g. for alanine dipeptide phi = 4,6,8,14 and
psi = 6,8,14,16):
    ACE  HH31 CH3 HH32 HH33 C O
    ALA  N H CA HA CB HB1 HB2 HB3 C O
    NME  N H C H1 H2 H3
OpenMM's PDB reader maps these names onto its canonical ones (pdbNames.xml), so the files
load with amber99sbildn.xml + amber99_obc.xml and amber14-all.xml + implicit/obc1.xml.

The structures are then energy-minimised with OpenMM (amber99sbildn + amber99_obc, NoCutoff,
Reference platform) and written with the names above, element symbols and CONECT records.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

# ----------------------------------------------------------------------------- geometry
# bond lengths (nm)
B_N_CA = 0.1458
B_CA_C = 0.1525
B_C_N = 0.1329
B_C_O = 0.1231
B_N_H = 0.1010
B_C_H = 0.1090
B_CA_CB = 0.1530
B_CH3_C = 0.1520  # ACE methyl carbon - carbonyl carbon
B_N_CH3 = 0.1449  # NME nitrogen - methyl carbon
# bond angles (degrees)
A_N_CA_C = 111.0
A_CA_C_N = 116.2
A_C_N_CA = 121.7
A_CA_C_O = 120.8
A_C_N_H = 119.0
A_N_CA_CB = 110.5
A_N_CA_HA = 109.5
A_TET = 109.5
# dihedrals around N-CA fixing the L configuration: dihedral(C, N, CA, X) for X = CB, HA
D_CB = -122.0
D_HA = 118.0


def place(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float, torsion: float) -> np.ndarray:
    """Position d with |c-d| = bond, angle(b, c, d) = angle, dihedral(a, b, c, d) = torsion (degrees).

    NeRF: build the local frame of (a, b, c) and convert the spherical internal coordinates.
    """
    theta = math.radians(angle)
    phi = math.radians(torsion)
    bc = c - b
    bc /= np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d_local = np.array([-bond * math.cos(theta),
                        bond * math.sin(theta) * math.cos(phi),
                        bond * math.sin(theta) * math.sin(phi)])
    return c + d_local[0] * bc + d_local[1] * m + d_local[2] * n


def dihedral(a, b, c, d) -> float:
    """Dihedral angle a-b-c-d in degrees (IUPAC sign convention)."""
    b0, b1, b2 = a - b, c - b, d - c
    b1n = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1n) * b1n
    w = b2 - np.dot(b2, b1n) * b1n
    x = np.dot(v, w)
    y = np.dot(np.cross(b1n, v), w)
    return math.degrees(math.atan2(y, x))


# ----------------------------------------------------------------------------- building
class Atom:
    def __init__(self, name: str, element: str, resname: str, resid: int, xyz: np.ndarray):
        self.name, self.element, self.resname, self.resid, self.xyz = name, element, resname, resid, xyz


def build_capped_alanine(n_ala: int, phi: list[float], psi: list[float]) -> tuple[list[Atom], list[tuple[int, int]]]:
    """ACE-(ALA)n-NME with the given backbone dihedrals (degrees); returns atoms (in PDB order) and bonds."""
    if len(phi) != n_ala or len(psi) != n_ala:
        raise ValueError("need one phi and one psi per alanine")
    atoms: list[Atom] = []
    bonds: list[tuple[int, int]] = []
    index: dict[tuple[int, str], int] = {}

    def add(resid: int, resname: str, name: str, element: str, xyz: np.ndarray) -> None:
        index[(resid, name)] = len(atoms)
        atoms.append(Atom(name, element, resname, resid, np.asarray(xyz, dtype=float)))

    def bond(r1: int, n1: str, r2: int, n2: str) -> None:
        bonds.append((index[(r1, n1)], index[(r2, n2)]))

    # ---- backbone trace first (positions only), then hydrogens/branches in PDB order
    # ACE: CH3 at origin, C along x, dummy reference in the xy plane for the first dihedrals
    ch3 = np.array([0.0, 0.0, 0.0])
    c_ace = np.array([B_CH3_C, 0.0, 0.0])
    dummy = np.array([-0.05, 0.1, 0.0])  # only fixes the orientation of the first torsion frame
    n_prev = place(dummy, ch3, c_ace, B_C_N, A_CA_C_N, 180.0)
    trace = [("ACE", ch3, c_ace)]  # (resname, 'alpha' carbon, carbonyl C) for each residue
    backbone: list[dict[str, np.ndarray]] = []
    prev_ca, prev_c, n_cur = ch3, c_ace, n_prev
    for i in range(n_ala):
        # omega(prev) = dihedral(prev CA, prev C, N, CA) = 180
        ca = place(prev_ca, prev_c, n_cur, B_N_CA, A_C_N_CA, 180.0)
        # phi = dihedral(prev C, N, CA, C)
        c = place(prev_c, n_cur, ca, B_CA_C, A_N_CA_C, phi[i])
        # psi = dihedral(N, CA, C, next N)
        n_next = place(n_cur, ca, c, B_C_N, A_CA_C_N, psi[i])
        backbone.append({"N": n_cur, "CA": ca, "C": c, "Nnext": n_next, "Cprev": prev_c})
        prev_ca, prev_c, n_cur = ca, c, n_next
    ch3_nme = place(prev_ca, prev_c, n_cur, B_N_CH3, A_C_N_CA, 180.0)

    # ---- ACE (resid 1)
    first_n = backbone[0]["N"] if n_ala else n_cur
    o_ace = place(first_n, ch3, c_ace, B_C_O, A_CA_C_O, 180.0)
    # methyl hydrogens staggered against the carbonyl O
    h_ace = [place(o_ace, c_ace, ch3, B_C_H, A_TET, t) for t in (180.0, 60.0, -60.0)]
    add(1, "ACE", "HH31", "H", h_ace[0])
    add(1, "ACE", "CH3", "C", ch3)
    add(1, "ACE", "HH32", "H", h_ace[1])
    add(1, "ACE", "HH33", "H", h_ace[2])
    add(1, "ACE", "C", "C", c_ace)
    add(1, "ACE", "O", "O", o_ace)
    bond(1, "HH31", 1, "CH3"); bond(1, "CH3", 1, "HH32"); bond(1, "CH3", 1, "HH33")
    bond(1, "CH3", 1, "C"); bond(1, "C", 1, "O")

    # ---- ALA residues (resid 2 ..)
    for i, bb in enumerate(backbone):
        r = 2 + i
        n, ca, c, n_next, c_prev = bb["N"], bb["CA"], bb["C"], bb["Nnext"], bb["Cprev"]
        h = place(ca, c_prev, n, B_N_H, A_C_N_H, 180.0)
        ha = place(c, n, ca, B_C_H, A_N_CA_HA, D_HA)
        cb = place(c, n, ca, B_CA_CB, A_N_CA_CB, D_CB)
        hb = [place(n, ca, cb, B_C_H, A_TET, t) for t in (180.0, 60.0, -60.0)]
        o = place(n_next, ca, c, B_C_O, A_CA_C_O, 180.0)
        for name, el, xyz in (("N", "N", n), ("H", "H", h), ("CA", "C", ca), ("HA", "H", ha), ("CB", "C", cb),
                              ("HB1", "H", hb[0]), ("HB2", "H", hb[1]), ("HB3", "H", hb[2]), ("C", "C", c),
                              ("O", "O", o)):
            add(r, "ALA", name, el, xyz)
        bond(r - 1, "C", r, "N")
        for a1, a2 in (("N", "H"), ("N", "CA"), ("CA", "HA"), ("CA", "CB"), ("CB", "HB1"), ("CB", "HB2"),
                       ("CB", "HB3"), ("CA", "C"), ("C", "O")):
            bond(r, a1, r, a2)

    # ---- NME
    r = 2 + n_ala
    h_nme = place(ch3_nme, prev_c, n_cur, B_N_H, A_C_N_H, 180.0)
    hs = [place(prev_c, n_cur, ch3_nme, B_C_H, A_TET, t) for t in (180.0, 60.0, -60.0)]
    add(r, "NME", "N", "N", n_cur)
    add(r, "NME", "H", "H", h_nme)
    add(r, "NME", "C", "C", ch3_nme)
    add(r, "NME", "H1", "H", hs[0])
    add(r, "NME", "H2", "H", hs[1])
    add(r, "NME", "H3", "H", hs[2])
    bond(r - 1, "C", r, "N")
    for a1, a2 in (("N", "H"), ("N", "C"), ("C", "H1"), ("C", "H2"), ("C", "H3")):
        bond(r, a1, r, a2)
    return atoms, bonds


# ----------------------------------------------------------------------------- output
def pdb_text(atoms: list[Atom], bonds: list[tuple[int, int]], xyz_nm: np.ndarray, remark: str) -> str:
    """Fixed-column PDB (coordinates in Angstrom) with elements and CONECT records."""
    lines = [f"REMARK   1 {remark}"[:80]]
    for i, (a, x) in enumerate(zip(atoms, xyz_nm * 10.0)):
        name = a.name if len(a.name) == 4 else " " + a.name  # 1-letter elements start in column 14
        lines.append(f"ATOM  {i + 1:5d} {name:<4s} {a.resname:>3s} A{a.resid:4d}    "
                     f"{x[0]:8.3f}{x[1]:8.3f}{x[2]:8.3f}{1.0:6.2f}{0.0:6.2f}          {a.element:>2s}")
    lines.append(f"TER   {len(atoms) + 1:5d}      {atoms[-1].resname:>3s} A{atoms[-1].resid:4d}")
    partners: dict[int, list[int]] = {}
    for i, j in bonds:
        partners.setdefault(i, []).append(j)
        partners.setdefault(j, []).append(i)
    for i in sorted(partners):
        js = sorted(partners[i])
        for k in range(0, len(js), 4):
            lines.append("CONECT" + f"{i + 1:5d}" + "".join(f"{j + 1:5d}" for j in js[k:k + 4]))
    lines.append("END")
    return "\n".join(lines) + "\n"


def minimize(pdb_path: Path, tolerance: float = 0.1, max_iterations: int = 0) -> tuple[np.ndarray, float, float]:
    """Minimise with amber99sbildn + amber99_obc (NoCutoff). Returns (positions nm, E_before, E_after) in kJ/mol."""
    import openmm
    from openmm import app, unit

    pdb = app.PDBFile(str(pdb_path))
    ff = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
    system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    integrator = openmm.VerletIntegrator(0.001)
    platform = openmm.Platform.getPlatformByName("Reference")
    ctx = openmm.Context(system, integrator, platform)
    ctx.setPositions(pdb.positions)
    e0 = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    openmm.LocalEnergyMinimizer.minimize(ctx, tolerance * unit.kilojoule_per_mole / unit.nanometer, max_iterations)
    st = ctx.getState(getEnergy=True, getPositions=True)
    e1 = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    x = np.asarray(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    del ctx
    return x, e0, e1


def signed_chirality(atoms: list[Atom], xyz: np.ndarray) -> list[float]:
    """(N-CA).((C-CA)x(CB-CA)) per alanine; positive for L."""
    out = []
    for r in sorted({a.resid for a in atoms if a.resname == "ALA"}):
        idx = {a.name: i for i, a in enumerate(atoms) if a.resid == r}
        ca = xyz[idx["CA"]]
        out.append(float(np.dot(xyz[idx["N"]] - ca, np.cross(xyz[idx["C"]] - ca, xyz[idx["CB"]] - ca))))
    return out


PEPTIDES = {
    "alanine_dipeptide": {"n_ala": 1, "phi": [-80.0], "psi": [150.0]},
    "alanine_tripeptide": {"n_ala": 2, "phi": [-80.0, -80.0], "psi": [150.0, 150.0]},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--outdir", default=str(Path(__file__).resolve().parent), help="output folder (default: data/)")
    ap.add_argument("--no-minimize", action="store_true", help="write the raw internal-coordinate geometry")
    ap.add_argument("--only", choices=sorted(PEPTIDES), action="append", help="build only these")
    args = ap.parse_args(argv)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for name in args.only or sorted(PEPTIDES):
        spec = PEPTIDES[name]
        atoms, bonds = build_capped_alanine(spec["n_ala"], spec["phi"], spec["psi"])
        xyz = np.stack([a.xyz for a in atoms])
        out = outdir / f"{name}.pdb"
        seq = "ACE-" + "-".join(["ALA"] * spec["n_ala"]) + "-NME"
        raw = out.with_suffix(".raw.pdb")
        raw.write_text(pdb_text(atoms, bonds, xyz, f"{seq} built from internal coordinates"))
        if args.no_minimize:
            raw.replace(out)
            print(f"{out}: {len(atoms)} atoms (not minimised)")
            continue
        x_min, e0, e1 = minimize(raw)
        raw.unlink()
        if any(s <= 0 for s in signed_chirality(atoms, x_min)):
            raise RuntimeError(f"{name}: minimised structure is not all-L")
        remark = (f"{seq} built by data/build_peptides.py, minimised amber99sbildn+amber99_obc NoCutoff, "
                  f"E={e1:.2f} kJ/mol")
        out.write_text(pdb_text(atoms, bonds, x_min, remark))
        angles = []
        for r in range(spec["n_ala"]):
            idx = {(a.resid, a.name): i for i, a in enumerate(atoms)}
            rid = 2 + r
            p = dihedral(*(x_min[idx[k]] for k in ((rid - 1, "C"), (rid, "N"), (rid, "CA"), (rid, "C"))))
            s = dihedral(*(x_min[idx[k]] for k in ((rid, "N"), (rid, "CA"), (rid, "C"), (rid + 1, "N"))))
            angles.append(f"({p:.1f}, {s:.1f})")
        print(f"{out}: {len(atoms)} atoms, E {e0:.1f} -> {e1:.2f} kJ/mol, (phi, psi) = {' '.join(angles)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
