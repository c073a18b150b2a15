rule evaluate:
    """Rung k: the samples at T_k against the reference at T_k -> metrics.json and plots."""
    input:
        samples=f"{RUN}/rung_{{rung}}/samples.h5",
        reference=f"{RUN}/reference/rung_{{rung}}.h5",
        # how the rung's samples were made: the anneal's ESS, the fidelity of the model behind it and
        # the relaxation's acceptance (MALA, torsion moves)
        diagnostics=lambda w: [f"{RUN}/rung_{w.rung}/anneal_diagnostics.json",
                               f"{RUN}/rung_{int(w.rung) - 1}/model_fidelity.json",
                               f"{RUN}/rung_{w.rung}/relax_diagnostics.json"] if int(w.rung) > 0 else [],
        # a second reference at T_k (reference.cross_check), evaluated beside the first
        cross_check=lambda w: reference_file(int(w.rung), "cross_check") or [],
        # precise basin free energies at T_k (reference.basin_free_energies), compared beside the reference's
        basin_reference=lambda w: reference_file(int(w.rung), "basin_free_energies") or [],
    output:
        metrics=f"{RUN}/rung_{{rung}}/metrics.json",
        # energy, distances, Ramachandran (one per residue), TICA, 1-D free-energy profiles
        plots=report(directory(f"{RUN}/rung_{{rung}}/plots"), patterns=["{name}.png"], category="Rungs",
                     subcategory="rung {rung}", caption="../report/rung_plots.rst"),
    params:
        system=SYSTEM_ARG,
        settings=settings_json("evaluate"),
        outdir=lambda w: f"{RUN}/rung_{w.rung}",
        diagnostics=lambda w, input: ["--diagnostics", *input.diagnostics] if input.diagnostics else [],
        seed=job_seed(5),
        cross_check=cross_check_args,
        basin_reference=basin_reference_args,
    log:
        f"{RUN}/logs/evaluate_{{rung}}.log",
    benchmark:
        f"{RUN}/benchmarks/evaluate_{{rung}}.tsv"
    threads: 1
    resources:
        **job_resources("evaluate"),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita evaluate --samples {input.samples:q} --reference {input.reference:q} --system {params.system:q}"
        " --config-json {params.settings:q} {params.diagnostics:q} {params.cross_check:q} {params.basin_reference:q} --seed {params.seed} --out-dir {params.outdir:q}"
        " --metrics-out {output.metrics:q} --plots-dir {output.plots:q} > {log:q} 2>&1"


rule evaluate_annealed:
    """Rung k >= 1: the anneal's weighted set, before relaxation, against the reference at T_k:
    what the learned model delivers by itself. The relaxation's MCMC moves at T_k can erase the
    anneal's basin weights entirely (docs/RESULTS.md, seventeenth session), so rule evaluate alone
    cannot tell the model's contribution from the relaxation's."""
    input:
        samples=f"{RUN}/rung_{{later}}/weighted.h5",
        reference=f"{RUN}/reference/rung_{{later}}.h5",
        basin_reference=lambda w: reference_file(int(w.later), "basin_free_energies") or [],
    output:
        metrics=f"{RUN}/rung_{{later}}/annealed_metrics.json",
    params:
        system=SYSTEM_ARG,
        settings=lambda w: json.dumps({**rung_settings(config, rung_of(w), "evaluate"), "plots": False},
                                      sort_keys=True),
        outdir=lambda w: f"{RUN}/rung_{w.later}",
        seed=job_seed(5),
        basin_reference=basin_reference_args,
    log:
        f"{RUN}/logs/evaluate_annealed_{{later}}.log",
    benchmark:
        f"{RUN}/benchmarks/evaluate_annealed_{{later}}.tsv"
    threads: 1
    resources:
        **job_resources("evaluate"),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita evaluate --samples {input.samples:q} --reference {input.reference:q} --system {params.system:q}"
        " --method pita_annealed --config-json {params.settings:q} {params.basin_reference:q} --seed {params.seed}"
        " --out-dir {params.outdir:q} --metrics-out {output.metrics:q} > {log:q} 2>&1"
