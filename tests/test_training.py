import csv
import json
import math

import numpy as np
import pytest
import torch

from pita.cli import main
from pita.errors import PitaInputError
from pita.models import load_checkpoint
from pita.samples import SampleSet
from pita.systems import load
from pita.systems.gmm import GaussianMixture
from pita.training import build_model, load_training_data, resolve_config, train

TINY_MLP = {"backbone_options": {"hidden": 32, "layers": 2, "embedding": 16}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # small models on a shared 2-core machine: extra threads only add contention
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gmm_set(n=2000, seed=0, temperature=1.0):
    gmm = GaussianMixture()
    x = gmm.sample(n, generator=torch.Generator().manual_seed(seed))
    e, f = gmm.energy_and_forces(x)
    attrs = dict(system="gmm", temperature=temperature, units="reduced", length_scale=1.0,
                 n_energy_evals=n, n_energy_evals_total=n)
    return gmm, SampleSet(positions=x.numpy().astype(np.float32), energy=e.numpy() * temperature,
                          forces=f.numpy().astype(np.float32) * temperature, attrs=attrs)


def lj13_set(path, n_chains=64, n_steps=300, temperature=1.0, seed=0):
    """Short random-walk Metropolis for LJ-13 at T = 1 (reduced units), with energies and forces."""
    system = load("lj13")
    g = torch.Generator().manual_seed(seed)
    grid = torch.tensor([[i, j, k] for i in range(3) for j in range(3) for k in range(2)], dtype=torch.float64)[:13]
    x = (1.1 * grid).expand(n_chains, 13, 3).clone()
    x = x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    u = system.energy(x)
    samples = []
    for step in range(n_steps):
        prop = x + 0.04 * torch.randn(x.shape, generator=g, dtype=torch.float64)
        u_prop = system.energy(prop)
        accept = torch.rand(n_chains, generator=g, dtype=torch.float64) < torch.exp(-(u_prop - u) / temperature)
        x = torch.where(accept.reshape(-1, 1, 1), prop, x)
        u = torch.where(accept, u_prop, u)
        if step % 25 == 24 and step >= n_steps - 100:
            samples.append(x.clone())
    pos = torch.cat(samples)
    e, f = system.energy_and_forces(pos)
    s = SampleSet(positions=pos.numpy().astype(np.float32), energy=e.numpy(), forces=f.numpy().astype(np.float32),
                  attrs=dict(system="lj13", temperature=temperature, units="reduced", length_scale=1.0, rung=0,
                             n_energy_evals=system.n_energy_evals, n_energy_evals_total=system.n_energy_evals))
    s.write(path)
    return s


def test_gmm_energy_and_score_are_learned():
    gmm, data = gmm_set()
    config = {"steps": 1200, "batch_size": 256, "lr": 2e-3, "ema_decay": 0.99,
              "model": {"backbone_options": {"hidden": 64, "layers": 3, "embedding": 32}}}
    result = train([data], gmm, config=config, device="cpu", seed=0, progress=False)
    model = result.model
    assert result.completed and model.n_atoms is None and model.dim == 2
    x = gmm.sample(2000, generator=torch.Generator().manual_seed(1)).float()
    with torch.no_grad():
        energy = model.energy(x, model.sigma_min).double()
    exact = -gmm.log_prob(x.double())
    pearson = float(np.corrcoef(energy.numpy(), exact.numpy())[0, 1])
    assert pearson >= 0.98, pearson
    # energy offset: E(x, sigma_min) + energy_offset ~ U/kT
    assert abs(float((energy + model.energy_offset - exact).mean())) < 0.5
    for sigma in (0.5, 1.0):  # -grad E against the score model
        by_energy, by_score = model.energy_score(x, sigma), model.score(x, sigma)
        relative_error = float((by_energy - by_score).pow(2).sum() / by_score.pow(2).sum())
        cos = float(torch.nn.functional.cosine_similarity(by_energy, by_score).mean())
        assert relative_error < 0.15 and cos > 0.85, (sigma, relative_error, cos)
    assert [k for k in ("denoising_score_matching", "energy_distillation", "energy_matching", "target_score")
            if k in result.history[-1]] == ["denoising_score_matching", "energy_distillation", "energy_matching",
                                             "target_score"]


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_gives_identical_weights(tmp_path):
    gmm, data = gmm_set(500)
    config = {"steps": 30, "batch_size": 64, "checkpoint_every": 5, "log_every": 4, "model": TINY_MLP}
    common = dict(config=config, device="cpu", seed=7, progress=False)
    full = train([data], gmm, **common)

    work = tmp_path / "work"
    first = train([data], gmm, work_dir=work, stop_after=12, **common)
    assert not first.completed and first.step == 12
    assert len(list(work.glob("train-*/state.pt"))) == 1

    class Killed(Exception):
        pass

    def kill_at_23(trainer):
        if trainer.step == 23:
            raise Killed

    with pytest.raises(Killed):
        train([data], gmm, work_dir=work, callback=kill_at_23, **common)  # resumes at 12, last state at 20
    seen = []
    out = tmp_path / "model.pt"
    resumed = train([data], gmm, work_dir=work, out=out, callback=lambda t: seen.append(t.step), **common)
    assert seen[0] == 21  # continued from the state saved at step 20, not from zero
    assert resumed.completed and resumed.step == 30
    a, b = _weights(full.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in resumed.history] == [r["step"] for r in full.history]
    assert resumed.history[-1]["loss"] == full.history[-1]["loss"]
    assert not list(work.glob("train-*/state.pt"))  # cleaned up after success
    # a changed config never resumes a stale state
    train([data], gmm, work_dir=work, stop_after=5, **{**common, "config": {**config, "lr": 5e-4}})
    train([data], gmm, work_dir=work, stop_after=5, **common)
    assert len(list(work.glob("train-*/state.pt"))) == 2


def test_warm_start_scales_energy_by_gamma(tmp_path):
    gmm, hot = gmm_set(500, temperature=2.0)
    prev = train([hot], gmm, config={"steps": 20, "batch_size": 64, "model": TINY_MLP}, device="cpu",
                 progress=False, out=tmp_path / "prev.pt").model
    _, cold = gmm_set(500, seed=1, temperature=1.0)
    cfg = resolve_config({"model": TINY_MLP})
    data = load_training_data([cold], gmm, 1.0)
    model = build_model(cfg, gmm, data, load_checkpoint(tmp_path / "prev.pt"), {}, 0)
    gamma = 2.0
    assert model.temperature == 1.0 and model.sd == prev.sd and model.sigma_max == prev.sigma_max
    x = data.x[:50]
    for sigma in (0.01, 0.5, 5.0):
        s = torch.full((50,), sigma)
        gauss = x.pow(2).sum(1) / (2 * (sigma**2 + prev.sd**2))
        expected = gamma * prev.energy(x, s) + (1 - gamma) * gauss
        assert torch.allclose(model.energy(x, s), expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(PitaInputError, match="model.backbone"):
        build_model(resolve_config({"model": {"backbone": "egnn"}}), gmm, data, prev, {"model": {"backbone": "egnn"}}, 0)


def test_bad_inputs(tmp_path):
    gmm, data = gmm_set(100)
    with pytest.raises(PitaInputError, match="config: field 'stepz': unknown setting"):
        resolve_config({"stepz": 3})
    with pytest.raises(PitaInputError, match="field 'loss_weights.energy_matching': must be >= 0"):
        resolve_config({"loss_weights": {"energy_matching": -1}})
    _, other = gmm_set(100, temperature=2.0)
    with pytest.raises(PitaInputError, match="beta conditioning"):
        train([data, other], gmm, config={"steps": 1, "model": TINY_MLP}, device="cpu", progress=False)
    # several temperatures with beta conditioning train
    result = train([data, other], gmm, config={"steps": 2, "batch_size": 16, "model": {**TINY_MLP, "beta_conditioning": True}},
                   device="cpu", progress=False)
    assert result.model.beta_conditioning and result.model.reference_temperature == 2.0
    rc = main(["train", "--samples", str(tmp_path / "missing.h5"), "--system", "gmm", "--out", str(tmp_path / "m.pt")])
    assert rc == 2


def test_cli_end_to_end_lj13(tmp_path, capsys):
    samples = tmp_path / "rung0.h5"
    data = lj13_set(samples)
    dup = data.subset(np.concatenate([np.arange(len(data)), np.arange(10)]))  # resampling leaves duplicates
    dup.write(tmp_path / "dup.h5")
    out, losses = tmp_path / "model.pt", tmp_path / "losses.csv"
    rc = main(["train", "--samples", str(tmp_path / "dup.h5"), "--system", "lj13", "--out", str(out),
               "--losses-csv", str(losses), "--steps", "20", "--batch-size", "32", "--device", "cpu",
               "--seed", "1", "--work-dir", str(tmp_path / "work"), "--no-progress",
               "--config-json", '{"log_every": 5, "holdout_fraction": 0, "model": {"backbone_options": {"hidden": 64, "layers": 2}}}'])
    assert rc == 0
    payload = torch.load(out, weights_only=True)
    meta = payload["meta"]
    assert meta["system"]["name"] == "lj13" and meta["temperature"] == 1.0 and meta["seed"] == 1
    assert meta["n_energy_evals"] == 0 and meta["n_energy_evals_total"] == data.attrs["n_energy_evals_total"]
    n_unique = len(np.unique(data.positions.reshape(len(data), -1), axis=0))
    assert meta["n_samples_unique"] == n_unique and meta["n_samples_read"] == len(data) + 10
    for key in ("length_scale", "sd", "energy_offset", "schedule", "config_digest", "package_version"):
        assert key in meta
    model = load_checkpoint(out)
    assert model.n_atoms == 13 and model.mean_free and 6.0 < model.sigma_max < 12.0
    x = torch.randn(4, 39)
    assert model.energy(x, 0.1).shape == (4,) and model.score(x, 0.1).shape == (4, 39)
    rows = list(csv.DictReader(losses.open()))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    assert all(math.isfinite(float(r["energy_matching"])) for r in rows)

    # the equivariant backbone through the CLI, warm-started from the first model is refused (architecture)
    # the pipeline's train section (as the workflow passes it) from a JSON file; the command line wins
    (tmp_path / "train.json").write_text(json.dumps({"batch_size": 8, "warm_start": True, "steps": 50,
                                                     "fidelity_samples": 16, "fidelity_steps": 10,
                                                     "model": {"backbone_options": {"hidden": 8, "layers": 2}}}))
    rc = main(["train", "--samples", str(samples), "--system", "lj13", "--out", str(tmp_path / "egnn.pt"),
               "--steps", "2", "--backbone", "egnn", "--device", "cpu", "--no-progress",
               "--config-json", str(tmp_path / "train.json")])
    assert rc == 0
    egnn = load_checkpoint(tmp_path / "egnn.pt")
    assert egnn.backbone == "egnn" and egnn.backbone_options == {"hidden": 8, "layers": 2}
    assert egnn.meta["training_config"]["batch_size"] == 8 and egnn.meta["training_config"]["steps"] == 2
    # the rung's set minus the held-out tenth trained the model; its fidelity is in the checkpoint
    fid = egnn.meta["fidelity"]
    assert fid["energy"]["n"] == round(0.1 * len(data)) and math.isfinite(fid["energy"]["residual_sd"])
    assert len(fid["score_energy_consistency"]) >= 3 and fid["generated"]["n"] == 16
    rc = main(["train", "--samples", str(samples), "--system", "lj13", "--out", str(tmp_path / "y.pt"),
               "--config-json", str(tmp_path / "nosuch.json")])
    assert rc == 2 and "nosuch.json" in capsys.readouterr().err
    rc = main(["train", "--samples", str(samples), "--system", "lj13", "--out", str(tmp_path / "x.pt"),
               "--init", str(out), "--backbone", "egnn", "--steps", "1", "--device", "cpu", "--no-progress"])
    assert rc == 2
    assert "model.backbone" in capsys.readouterr().err


def test_heat_equation_residual_term_makes_the_energy_consistent_across_sigma():
    """With the heat-equation term, the spread over x of tau r (pita.fidelity) drops in every sigma band;
    without it, denoising alone leaves it free (2-D mixture, energy-only model, same seed and steps)."""
    from pita.fidelity import heat_equation_residual

    gmm, data = gmm_set(2000)
    x = torch.as_tensor(data.positions[:1000])
    spread = {}
    for w in (0.0, 1.0):
        cfg = {"steps": 300, "batch_size": 128, "model": {**TINY_MLP, "score_source": "energy"},
               "loss_weights": {"heat_equation": w}, "holdout_fraction": 0}
        result = train([data], gmm, config=cfg, device="cpu", progress=False, seed=3)
        assert ("heat_equation" in result.history[-1]) == (w > 0)
        spread[w] = np.array([b["sd_tau_r"] for b in heat_equation_residual(result.model, x, None)])
    assert np.all(spread[1.0] < spread[0.0]) and spread[1.0].max() < 0.5 * spread[0.0].max()
