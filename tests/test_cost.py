"""The cost table (pita.cost): wall time, CPU and GPU hours per method from Snakemake benchmarks."""
import pytest

from pita.cost import cost_table
from pita.errors import PitaInputError

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(folder, job, wall, cpu):
    path = folder / f"{job}.tsv"
    path.write_text(HEADER + f"{wall}\t0:00:00\t1\t1\t1\t1\t0\t0\t100\t{cpu}\n")
    return path


def test_gpu_hours_count_the_jobs_that_asked_for_a_gpu_not_their_rules(tmp_path):
    walls = {"md_seed": 360.0, "train_0": 720.0, "anneal_1": 180.0, "relax_1": 36.0,
             "baseline_md": 1800.0, "baseline_smc": 900.0, "reference_md_1": 3600.0, "evaluate_1": 60.0}
    files = [_bench(tmp_path, job, wall, wall / 2) for job, wall in walls.items()]
    rows = [{"method": "pita", "n_energy_evals_total": 1000}, {"method": "smc", "n_energy_evals_total": 990}]
    # plain MD on OpenMM's CPU platform asked for none; the seed MD and smc did
    gpu_jobs = ["md_seed", "train_0", "anneal_1", "relax_1", "baseline_smc"]
    table = {r["method"]: r for r in cost_table(files, rows, gpu_jobs)}
    assert table["pita"]["gpu_hours"] == pytest.approx((360 + 720 + 180 + 36) / 3600)
    assert table["pita"]["wall_time_s"] == pytest.approx(360 + 720 + 180 + 36)
    assert table["pita"]["cpu_hours"] == pytest.approx((360 + 720 + 180 + 36) / 2 / 3600)
    assert table["md"]["gpu_hours"] == 0 and table["md"]["wall_time_s"] == 1800
    # smc shares the seed set with PITA: its job and md_seed, both on the GPU
    assert table["smc"]["gpu_hours"] == pytest.approx((900 + 360) / 3600) and table["smc"]["jobs"] == 2
    assert table["smc"]["n_energy_evals_total"] == 990
    assert table["evaluation"]["gpu_hours"] == 0 and table["evaluation"]["n_energy_evals_total"] is None
    # without a GPU list (device: cpu) nothing is GPU time
    assert all(r["gpu_hours"] == 0 for r in cost_table(files, rows))


def test_gpu_job_names_that_match_no_benchmark_are_refused(tmp_path):
    """Rule names (the old meaning) would silently count no GPU time."""
    files = [_bench(tmp_path, job, 10.0, 5.0) for job in ("md_seed", "train_0")]
    with pytest.raises(PitaInputError, match="--gpu-jobs: train:"):
        cost_table(files, (), ["md_seed", "train"])


def test_a_benchmark_of_no_workflow_job_is_refused_with_its_name(tmp_path):
    bad = _bench(tmp_path, "mystery_step", 1.0, 1.0)
    with pytest.raises(PitaInputError, match="mystery_step.tsv"):
        cost_table([bad])
