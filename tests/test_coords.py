"""Coordinate helpers: proper random rotations and Kabsch alignment."""
import torch

from pita.coords import align_to_reference, kabsch_rotations, random_rotations
from pita.systems import load


def test_random_rotations_are_proper():
    r = random_rotations(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(500, 3, 3))
    assert torch.allclose(torch.linalg.det(r), torch.ones(500, dtype=torch.float64))


def test_alignment_undoes_rotation_and_translation_never_reflects():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(22, 3, generator=g, dtype=torch.float64)
    rot = random_rotations(8, generator=g, dtype=torch.float64)
    x = ref @ rot.transpose(1, 2) + torch.randn(8, 1, 3, generator=g, dtype=torch.float64)
    aligned = align_to_reference(x, ref)
    torch.testing.assert_close(aligned, (ref - ref.mean(0)).expand(8, 22, 3))
    r = kabsch_rotations(-x, ref)  # a mirror image cannot be rotated onto the reference
    assert torch.allclose(torch.linalg.det(r), torch.ones(8, dtype=torch.float64))
    assert (align_to_reference(-x, ref) - (ref - ref.mean(0))).abs().max() > 0.5


def test_forces_rotate_with_positions():
    aldp = load("alanine_dipeptide")
    ref = torch.as_tensor(aldp.reference_positions, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    x = (ref + 0.01 * torch.randn(4, 22, 3, generator=g, dtype=torch.float64)) @ random_rotations(
        4, generator=g, dtype=torch.float64).transpose(1, 2)
    e, f = aldp.energy_and_forces(x)
    xa, fa = align_to_reference(x, ref, f)
    e2, f2 = aldp.energy_and_forces(xa)
    torch.testing.assert_close(e2, e)
    torch.testing.assert_close(fa, f2, rtol=1e-8, atol=1e-8)
