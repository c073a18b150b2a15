"""Backbone networks F(u, c_noise, cond): the raw networks inside the preconditioned models.

Every backbone maps flat inputs u (B, D) (u = c_in x~), the noise embedding input
c_noise (B,) and an optional conditioning scalar cond (B,) (log of the inverse-temperature
ratio) either to a vector (B, D) (`output="vector"`, for the denoiser) or to a scalar (B,)
(`output="scalar"`, for the energy). Output layers start at zero, so a fresh denoiser is
D = c_skip x and a fresh energy is the Gaussian term alone (see preconditioning.py).

- `mlp`: a plain multilayer perceptron on the flat vector; for toys in R^d and the default
  CPU model (small and fast even with the double backward pass that energy distillation needs).
- `transformer`: self-attention over atoms (one token per atom: its coordinates plus a
  learned atom embedding); not equivariant, trained with random proper rotations; fast on GPU.
- `pairnet`: an energy over all interatomic distances, each standardised by its mean and spread
  in the training data widened by the noise (z_ij = (d_ij - mu_ij) / sqrt(s_ij^2 + 2 sigma^2)), fed
  with the noise embedding to an MLP. Invariant under rotations, translations and reflections by
  construction, and it sees bond-scale geometry at the scale of its thermal spread. For identical
  particles (one atom type, Lennard-Jones) it is also invariant under relabelling: a shared pair
  function of each distance plus a per-particle function of its neighbour density; option
  `distance_rbf` adds radial functions on log d fine enough to resolve a cold rung's first shell
  with the statistics of the hot rung 0 (which the warm-started rungs keep). Its vector
  output is minus the gradient of its scalar (equivariant): with `score_source: energy` the drift
  and the weights use one field.
- `egnn`: an E(n)-equivariant graph network (Satorras et al. 2021) on the fully connected
  graph of particles; vector output equivariant and scalar output invariant under rotations,
  reflections and translations (so it learns both enantiomers of a chiral molecule).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..settings import BACKBONES  # the one list: config choices, CLI choices, the builder


class ScalarEmbedding(nn.Module):
    """Embed a scalar s as [s, sin(w_k s), cos(w_k s)], w_k log-spaced in [1, max_frequency]."""

    def __init__(self, n_frequencies: int = 8, max_frequency: float = 100.0) -> None:
        super().__init__()
        freqs = torch.exp(torch.linspace(0.0, math.log(max_frequency), n_frequencies))
        self.register_buffer("frequencies", freqs, persistent=False)
        self.dim = 2 * n_frequencies + 1

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        ws = s.unsqueeze(-1) * self.frequencies.to(s.dtype)
        return torch.cat([s.unsqueeze(-1), torch.sin(ws), torch.cos(ws)], dim=-1)


class ConditionEmbedding(nn.Module):
    """Noise level (and optionally inverse temperature) -> a feature vector of size `dim`."""

    def __init__(self, dim: int, with_cond: bool) -> None:
        super().__init__()
        self.noise = ScalarEmbedding()
        self.cond = ScalarEmbedding() if with_cond else None
        n_in = self.noise.dim + (self.cond.dim if with_cond else 0)
        self.mlp = nn.Sequential(nn.Linear(n_in, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        feats = [self.noise(c_noise)]
        if self.cond is not None:
            if cond is None:
                raise ValueError("this model is conditioned on the inverse temperature: pass cond")
            feats.append(self.cond(cond))
        return self.mlp(torch.cat(feats, dim=-1))


def zero_init(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class MLPBackbone(nn.Module):
    def __init__(self, dim: int, n_atoms: int | None, output: str, with_cond: bool = False,
                 atom_types: list[int] | None = None, hidden: int = 256, layers: int = 3,
                 embedding: int = 64) -> None:
        super().__init__()
        self.output = output
        self.embed = ConditionEmbedding(embedding, with_cond)
        blocks: list[nn.Module] = [nn.Linear(dim + embedding, hidden), nn.SiLU()]
        for _ in range(layers - 1):
            blocks += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.body = nn.Sequential(*blocks)
        self.head = zero_init(nn.Linear(hidden, dim if output == "vector" else 1))

    def forward(self, u: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(torch.cat([u, self.embed(c_noise, cond)], dim=-1))
        out = self.head(h)
        return out if self.output == "vector" else out.squeeze(-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (twice differentiable on every device)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"transformer: width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, n, w = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(w // self.heads), dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, w))


class TransformerBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.cond = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.SiLU(), nn.Linear(4 * width, width))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = h + self.cond(emb).unsqueeze(1)
        h = h + self.attn(self.norm1(h))
        return h + self.mlp(self.norm2(h))


def _atom_types(n_atoms: int, atom_types: list[int] | None) -> torch.Tensor:
    types = torch.arange(n_atoms) if atom_types is None else torch.as_tensor(atom_types, dtype=torch.long)
    if types.shape != (n_atoms,):
        raise ValueError(f"atom_types must have {n_atoms} entries, got {tuple(types.shape)}")
    return types


class TransformerBackbone(nn.Module):
    def __init__(self, dim: int, n_atoms: int | None, output: str, with_cond: bool = False,
                 atom_types: list[int] | None = None, width: int = 128, layers: int = 4, heads: int = 4) -> None:
        super().__init__()
        if n_atoms is None:
            raise ValueError("the transformer backbone needs particles (n_atoms), use mlp for R^d")
        self.output, self.n_atoms = output, n_atoms
        types = _atom_types(n_atoms, atom_types)
        self.register_buffer("types", types, persistent=False)
        self.atom_embedding = nn.Embedding(int(types.max()) + 1, width)
        self.coord_embedding = nn.Linear(3, width)
        self.embed = ConditionEmbedding(width, with_cond)
        self.blocks = nn.ModuleList([TransformerBlock(width, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)
        self.head = zero_init(nn.Linear(width, 3 if output == "vector" else 1))

    def forward(self, u: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        b = u.shape[0]
        h = self.coord_embedding(u.reshape(b, self.n_atoms, 3)) + self.atom_embedding(self.types)
        emb = self.embed(c_noise, cond)
        for block in self.blocks:
            h = block(h, emb)
        out = self.head(self.norm(h))
        return out.reshape(b, -1) if self.output == "vector" else out.sum(dim=(1, 2))


class EGNNLayer(nn.Module):
    """m_ij = phi_e(h_i, h_j, |x_i - x_j|^2, |x_i^0 - x_j^0|^2)
    x_i <- x_i + 1/(n-1) sum_j (x_i - x_j) / (|x_i - x_j| + 1) phi_x(m_ij)
    h_i <- h_i + phi_h(h_i, 1/(n-1) sum_j m_ij)"""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.edge = nn.Sequential(nn.Linear(2 * hidden + 2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.coord = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.node = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h, x, r2_initial, off_diagonal):
        n = x.shape[1]
        diff = x.unsqueeze(2) - x.unsqueeze(1)  # (B, n, n, 3): x_i - x_j
        r2 = diff.pow(2).sum(-1, keepdim=True)
        hi = h.unsqueeze(2).expand(-1, -1, n, -1)
        hj = h.unsqueeze(1).expand(-1, n, -1, -1)
        m = self.edge(torch.cat([hi, hj, r2, r2_initial], dim=-1)) * off_diagonal
        unit = diff / (torch.sqrt(r2 + 1e-8) + 1.0)
        x = x + (unit * self.coord(m) * off_diagonal).sum(2) / (n - 1)
        h = h + self.node(torch.cat([h, m.sum(2) / (n - 1)], dim=-1))
        return h, x


class EGNNBackbone(nn.Module):
    def __init__(self, dim: int, n_atoms: int | None, output: str, with_cond: bool = False,
                 atom_types: list[int] | None = None, hidden: int = 64, layers: int = 4) -> None:
        super().__init__()
        if n_atoms is None:
            raise ValueError("the egnn backbone needs particles (n_atoms), use mlp for R^d")
        self.output, self.n_atoms = output, n_atoms
        types = _atom_types(n_atoms, atom_types)
        self.register_buffer("types", types, persistent=False)
        self.atom_embedding = nn.Embedding(int(types.max()) + 1, hidden)
        self.embed = ConditionEmbedding(hidden, with_cond)
        self.layers = nn.ModuleList([EGNNLayer(hidden) for _ in range(layers)])
        if output == "vector":
            # the summed coordinate updates are the output: start them at zero
            for layer in self.layers:
                zero_init(layer.coord[-1])
        else:
            self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), zero_init(nn.Linear(hidden, 1)))

    def forward(self, u: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        b, n = u.shape[0], self.n_atoms
        x0 = u.reshape(b, n, 3)
        x = x0
        h = self.atom_embedding(self.types).unsqueeze(0) + self.embed(c_noise, cond).unsqueeze(1)
        off_diagonal = (1.0 - torch.eye(n, dtype=u.dtype, device=u.device)).unsqueeze(-1)
        r2_initial = (x0.unsqueeze(2) - x0.unsqueeze(1)).pow(2).sum(-1, keepdim=True)
        for layer in self.layers:
            h, x = layer(h, x, r2_initial, off_diagonal)
        if self.output == "vector":
            return (x - x0).reshape(b, -1)
        return self.head(h).sum(dim=(1, 2))


class PairBackbone(nn.Module):
    """MLP on standardised interatomic distances (see the module docstring); needs `set_statistics`
    (done by the trainer from the rung-0 data, then carried along by warm starts)."""

    def __init__(self, dim: int, n_atoms: int | None, output: str, with_cond: bool = False,
                 atom_types: list[int] | None = None, hidden: int = 256, layers: int = 3, embedding: int = 64,
                 sd: float = 1.0, rbf: int = 16, distance_rbf: int = 0) -> None:
        super().__init__()
        if n_atoms is None or n_atoms < 2:
            raise ValueError("the pairnet backbone needs particles (n_atoms >= 2), use mlp for R^d")
        self.output, self.n_atoms, self.sd = output, n_atoms, float(sd)
        i, j = torch.triu_indices(n_atoms, n_atoms, offset=1)
        self.register_buffer("pair_i", i, persistent=False)
        self.register_buffer("pair_j", j, persistent=False)
        n_pairs = int(i.numel())
        # data statistics of each distance (x~ units); persistent: they travel in the checkpoint
        self.register_buffer("pair_mean", torch.ones(n_pairs))
        self.register_buffer("pair_std", torch.ones(n_pairs))
        self.embed = ConditionEmbedding(embedding, with_cond)
        # identical particles (one atom type, e.g. Lennard-Jones): the energy must not depend on their
        # labels, so every pair shares one standardisation and one pair function, and the many-body
        # part sees each particle's neighbour density (a sum over its pairs) instead of the ordered
        # distance vector
        self.identical = atom_types is not None and len(set(atom_types)) == 1
        if distance_rbf < 0 or (distance_rbf and not self.identical) or distance_rbf == 1:
            raise ValueError("distance_rbf must be 0 or >= 2, and only for identical particles")
        self.distance_rbf = int(distance_rbf)
        if self.distance_rbf:
            # fine radial functions on log d over the data's range of distances (set_statistics): the
            # standardised z of a hot, diffuse rung-0 set packs a cold rung's whole first shell into a
            # fraction of one coarse basis function
            self.register_buffer("log_distance_range", torch.tensor([0.0, 1.0]))
            # a repulsive core below that range: the data hold no shorter distance, so nothing else
            # keeps the model's density from letting particles overlap (measured: annealed LJ-13
            # particles with pair distances ~0.1 and U ~ 1e11 without it)
            self.core_stiffness = nn.Parameter(torch.tensor(math.log(math.expm1(100.0))))
        if self.identical:
            self.register_buffer("rbf_centres", torch.linspace(-3.0, 3.0, rbf), persistent=False)
            self.rbf_width = 6.0 / (rbf - 1)
            n_radial = rbf + self.distance_rbf
            self.pair_mlp = nn.Sequential(nn.Linear(n_radial + 1 + embedding, hidden), nn.SiLU(),
                                          nn.Linear(hidden, hidden), nn.SiLU(), zero_init(nn.Linear(hidden, 1)))
            blocks: list[nn.Module] = [nn.Linear(n_radial + embedding, hidden), nn.SiLU()]
        else:
            blocks = [nn.Linear(n_pairs + embedding, hidden), nn.SiLU()]
        for _ in range(layers - 1):
            blocks += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.body = nn.Sequential(*blocks)
        self.head = zero_init(nn.Linear(hidden, 1))
        if not self.identical:
            # a harmonic term per distance (bonds are stiff): softplus(k) z^2 / 2, learned; it starts
            # small (softplus 0.1) but not at softplus's flat tail, where its gradient would vanish
            self.stiffness = nn.Parameter(torch.full((n_pairs,), math.log(math.expm1(0.1))))

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        p = x.reshape(x.shape[0], self.n_atoms, 3)
        diff = p[:, self.pair_i] - p[:, self.pair_j]
        return torch.sqrt(diff.pow(2).sum(-1) + 1e-12)

    @torch.no_grad()
    def set_statistics(self, x: torch.Tensor, max_frames: int = 50_000) -> None:
        """Mean and spread of every distance over (the first `max_frames` of) the training configurations
        x (B, D), x~ units; with distance_rbf, the range of distances over every frame (the core must be
        zero on all of them, e.g. on a later, hotter set of a beta-conditioned model)."""
        d = self.distances(x[:max_frames].to(self.pair_mean.dtype))
        if self.identical:  # one distribution for all pairs: labels carry no meaning
            d = d.reshape(-1, 1)
        self.pair_mean.copy_(d.mean(0).expand_as(self.pair_mean))
        self.pair_std.copy_(d.std(0).clamp_min(1e-3).expand_as(self.pair_std))
        if self.distance_rbf:  # 10 % below the shortest distance seen, up to the longest
            d_min, d_max = float(d.min()), float(d.max())  # the first max_frames, then the rest
            for start in range(max_frames, len(x), max_frames):
                d = self.distances(x[start:start + max_frames].to(self.pair_mean.dtype))
                d_min, d_max = min(d_min, float(d.min())), max(d_max, float(d.max()))
            lo, hi = math.log(0.9 * max(d_min, 1e-6)), math.log(max(d_max, 1e-6))
            self.log_distance_range.copy_(torch.tensor([lo, hi], dtype=self.log_distance_range.dtype))

    def scalar(self, u: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        sigma2 = torch.exp(8.0 * c_noise).reshape(-1, 1)  # c_noise = ln(sigma) / 4
        d = self.distances(u) * torch.sqrt(sigma2 + self.sd**2)  # back to x~ units: u = x / sqrt(sigma^2 + sd^2)
        z = (d - self.pair_mean) / torch.sqrt(self.pair_std**2 + 2.0 * sigma2)
        emb = self.embed(c_noise, cond)
        if self.identical:
            if not self.distance_rbf:
                return self._identical_scalar(z, emb)
            log_d = torch.log(d.clamp_min(1e-6))
            return self._identical_scalar(z, emb, self._log_distance_rbf(d, log_d, sigma2)) + self._core(log_d, sigma2)
        h = self.body(torch.cat([z, emb], dim=-1))
        harmonic = 0.5 * (nn.functional.softplus(self.stiffness) * z.pow(2)).sum(-1)
        return self.head(h).squeeze(-1) + harmonic

    def _log_distance_rbf(self, d: torch.Tensor, log_d: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
        """(B, P, distance_rbf) Gaussians on log d, evenly spaced over the data's range; each widened by
        the noise's spread in log d (sqrt(2) sigma / d), so that they fade smoothly where noise dominates."""
        lo, hi = self.log_distance_range[0], self.log_distance_range[1]
        k = torch.arange(self.distance_rbf, dtype=d.dtype, device=d.device)
        centres = lo + (hi - lo) * k / (self.distance_rbf - 1)
        width2 = ((hi - lo) / (self.distance_rbf - 1)) ** 2 + 2.0 * sigma2 / d.clamp_min(1e-3) ** 2  # (B, P)
        return torch.exp(-0.5 * (log_d.unsqueeze(-1) - centres) ** 2 / width2.unsqueeze(-1))

    def _core(self, log_d: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
        """(B,) softplus(k) sum_ij wall(log d_lo - log d_ij) w^2 / (w^2 + s^2): zero on every distance the data
        hold (d_lo is 0.9 times the shortest), faded like the basis where noise dominates. The wall is
        max(0, m)^2 smoothed by a Gaussian of the noise's spread in log d, s^2 = 2 sigma^2 / d_lo^2:
        E[max(0, m + s eps)^2] = (m^2 + s^2) Phi(m / s) + m s phi(m / s), smooth at every sigma > 0 (a bare
        max(0, m)^2 is only once differentiable at d_lo: its Laplacian jumps there, which the network's
        heat-equation residual cannot absorb) and max(0, m)^2 again as sigma -> 0."""
        lo, hi = self.log_distance_range[0], self.log_distance_range[1]
        w2 = ((hi - lo) / (self.distance_rbf - 1)) ** 2
        s2 = 2.0 * sigma2 * torch.exp(-2.0 * lo)  # (B, 1)
        s = torch.sqrt(s2).clamp_min(1e-8)
        m = lo - log_d
        t = m / s
        gauss = torch.exp(-0.5 * t.pow(2)) / math.sqrt(2.0 * math.pi)
        wall = (m.pow(2) + s2) * torch.special.ndtr(t) + m * s * gauss
        fade = w2 / (w2 + s2.squeeze(-1))
        return nn.functional.softplus(self.core_stiffness) * wall.sum(-1) * fade

    def _identical_scalar(self, z: torch.Tensor, emb: torch.Tensor, fine: torch.Tensor | None = None) -> torch.Tensor:
        """sum over pairs of phi(z_ij) + sum over particles of psi(neighbour density): invariant
        under any relabelling of the particles."""
        b, n_pairs = z.shape
        rbf = torch.exp(-0.5 * ((z.unsqueeze(-1) - self.rbf_centres) / self.rbf_width) ** 2)  # (B, P, K)
        if fine is not None:
            rbf = torch.cat([rbf, fine.to(rbf.dtype)], dim=-1)
        pair_in = torch.cat([rbf, z.unsqueeze(-1), emb.unsqueeze(1).expand(b, n_pairs, emb.shape[-1])], dim=-1)
        pair_energy = self.pair_mlp(pair_in).squeeze(-1).sum(-1)
        density = rbf.new_zeros(b, self.n_atoms, rbf.shape[-1])
        density.index_add_(1, self.pair_i, rbf).index_add_(1, self.pair_j, rbf)
        atom_in = torch.cat([density, emb.unsqueeze(1).expand(b, self.n_atoms, emb.shape[-1])], dim=-1)
        return pair_energy + self.head(self.body(atom_in)).squeeze(-1).sum(-1)

    def forward(self, u: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.output == "scalar":
            return self.scalar(u, c_noise, cond)
        with torch.enable_grad():
            v = u if u.requires_grad else u.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.scalar(v, c_noise, cond).sum(), v, create_graph=True)
        return -g


def make_backbone(name: str, dim: int, n_atoms: int | None, output: str, with_cond: bool = False,
                  atom_types: list[int] | None = None, **options) -> nn.Module:
    classes = {"mlp": MLPBackbone, "transformer": TransformerBackbone, "egnn": EGNNBackbone, "pairnet": PairBackbone}
    if name not in classes:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if output not in ("vector", "scalar"):
        raise ValueError(f"backbone output must be 'vector' or 'scalar', got {output!r}")
    return classes[name](dim, n_atoms, output, with_cond=with_cond, atom_types=atom_types, **options)


#: default sizes per backbone (the CPU default is the MLP)
DEFAULT_OPTIONS = {
    "mlp": {"hidden": 256, "layers": 3, "embedding": 64},
    "transformer": {"width": 128, "layers": 4, "heads": 4},
    "egnn": {"hidden": 64, "layers": 4},
    "pairnet": {"hidden": 256, "layers": 3, "embedding": 64},
}
