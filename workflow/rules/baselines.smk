# Baselines at the PITA run's energy-evaluation budget (config `baselines`): plain MD at the
# target temperature, replica exchange across the ladder, and model-free SMC (adaptive tempering
# from the PITA run's own rung-0 set with its relax settings per rung), each spending at most the
# budget (BUDGET_FILE: planned from the run's settings by plan_budget, or the final rung's
# n_energy_evals_total), evaluated against the final rung's reference.


rule plan_budget:
    """What the PITA run will spend, from its settings: the rung-0 set's evaluations plus each
    rung's final correction and relaxation (a bridge, if one runs, spends more: the report shows it)."""
    input:
        seed_set=f"{RUN}/rung_0/samples.h5",
    output:
        budget=f"{RUN}/baselines/budget.json",
    params:
        system=SYSTEM_ARG,
        temperatures=TEMPS,
        # only what the budget depends on, so a rung's other changes do not rerun the baselines
        anneal=rung_sections_json("anneal", ["n_particles"]),
        relax=rung_sections_json("relax", ["n_out", "n_steps", "torsion_moves"]),
    log:
        f"{RUN}/logs/plan_budget.log",
    benchmark:
        f"{RUN}/benchmarks/plan_budget.tsv"
    threads: 1
    priority: BASELINE_PRIORITY
    resources:
        **job_resources("plan_budget"),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita budget --system {params.system:q} --temperatures {params.temperatures} --seed-set {input.seed_set:q}"
        " --anneal-json {params.anneal:q} --relax-json {params.relax:q} --out {output.budget:q} > {log:q} 2>&1"


rule baseline:
    """Plain MD or replica exchange within the PITA run's energy-evaluation budget."""
    input:
        unpack(baseline_inputs),
    output:
        samples=f"{RUN}/baselines/{{method}}/samples.h5",
    wildcard_constraints:
        method="md|replica_exchange",
    params:
        system=SYSTEM_ARG,
        temperatures=TEMPS,
        settings=json.dumps(BASELINES, sort_keys=True),
        smc=baseline_smc_args,
        device=job_device(baseline_uses_gpu),
        seed=lambda w: config["seed"] + 1000 * K + BASELINE_SEED_OFFSET[w.method],
    log:
        f"{RUN}/logs/baseline_{{method}}.log",
    benchmark:
        f"{RUN}/benchmarks/baseline_{{method}}.tsv"
    threads: config["threads"]
    priority: BASELINE_PRIORITY
    resources:
        **job_resources("baseline", baseline_uses_gpu),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita baseline --method {wildcards.method} --system {params.system:q} --temperatures {params.temperatures}"
        " --budget-from {input.budget:q} {params.smc:q} --config-json {params.settings:q} --device {params.device:q}"
        " --seed {params.seed} --no-progress --out {output.samples:q} > {log:q} 2>&1"


use rule baseline as baseline_smc with:
    output:
        samples=f"{RUN}/baselines/{{method}}/samples.h5",
        # the final rung's bridged set before its relaxation: the no-model counterpart of
        # PITA's annealed set (rung_K/weighted.h5)
        pre_relaxation=f"{RUN}/baselines/{{method}}/bridged.h5",
    wildcard_constraints:
        method="smc",


rule evaluate_baseline:
    """A baseline against the reference at the target temperature (as rule evaluate for rung K)."""
    input:
        samples=f"{RUN}/baselines/{{method}}/samples.h5",
        reference=f"{RUN}/reference/rung_{K}.h5",
        cross_check=reference_file(K, "cross_check") or [],
        basin_reference=reference_file(K, "basin_free_energies") or [],
    output:
        metrics=f"{RUN}/baselines/{{method}}/metrics.json",
        plots=report(directory(f"{RUN}/baselines/{{method}}/plots"), patterns=["{name}.png"], category="Baselines",
                     subcategory="{method}", caption="../report/baseline_plots.rst"),
    params:
        system=SYSTEM_ARG,
        settings=json.dumps(rung_settings(config, K, "evaluate"), sort_keys=True),
        outdir=lambda w: f"{RUN}/baselines/{w.method}",
        seed=config["seed"] + 1000 * K + 5,
        cross_check=cross_check_args,
        basin_reference=basin_reference_args,
    log:
        f"{RUN}/logs/evaluate_baseline_{{method}}.log",
    benchmark:
        f"{RUN}/benchmarks/evaluate_baseline_{{method}}.tsv"
    threads: 1
    resources:
        **job_resources("evaluate_baseline"),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita evaluate --samples {input.samples:q} --reference {input.reference:q} --system {params.system:q}"
        " --method {wildcards.method} --config-json {params.settings:q} {params.cross_check:q} {params.basin_reference:q} --seed {params.seed}"
        " --out-dir {params.outdir:q} --metrics-out {output.metrics:q} --plots-dir {output.plots:q} > {log:q} 2>&1"


rule evaluate_smc_bridged:
    """smc's final bridged set, before its relaxation, against the final rung's reference
    (method smc_bridged): set beside PITA's annealed set in the report, the two samplers'
    own results before the relaxation they share."""
    input:
        samples=f"{RUN}/baselines/smc/bridged.h5",
        reference=f"{RUN}/reference/rung_{K}.h5",
        basin_reference=reference_file(K, "basin_free_energies") or [],
    output:
        metrics=f"{RUN}/baselines/smc/bridged_metrics.json",
    params:
        system=SYSTEM_ARG,
        settings=json.dumps({**rung_settings(config, K, "evaluate"), "plots": False}, sort_keys=True),
        outdir=lambda w, output: os.path.dirname(output.metrics),
        seed=config["seed"] + 1000 * K + 5,
        basin_reference=basin_reference_args,
    log:
        f"{RUN}/logs/evaluate_baseline_smc_bridged.log",
    benchmark:
        f"{RUN}/benchmarks/evaluate_baseline_smc_bridged.tsv"
    threads: 1
    resources:
        **job_resources("evaluate_baseline"),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita evaluate --samples {input.samples:q} --reference {input.reference:q} --system {params.system:q}"
        " --method smc_bridged --config-json {params.settings:q} {params.basin_reference:q} --seed {params.seed}"
        " --out-dir {params.outdir:q} --metrics-out {output.metrics:q} > {log:q} 2>&1"
