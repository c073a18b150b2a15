rule evaluate:
    """Rung k: the samples at T_k against the reference MD at T_k -> metrics.json and plots."""
    input:
        samples=f"{RUN}/rung_{{rung}}/samples.h5",
        reference=f"{RUN}/reference/rung_{{rung}}.h5",
    output:
        metrics=f"{RUN}/rung_{{rung}}/metrics.json",
    params:
        system=SYSTEM_ARG,
        flags=lambda w: f"--ot-max-samples {rung_settings(config, int(w.rung), 'evaluate')['max_samples']}",
        outdir=lambda w: f"{RUN}/rung_{w.rung}",
        seed=lambda w: config["seed"] + 1000 * int(w.rung) + 5,
    log:
        f"{RUN}/logs/evaluate_{{rung}}.log",
    benchmark:
        f"{RUN}/benchmarks/evaluate_{{rung}}.tsv"
    threads: 1
    resources:
        runtime=60,
        mem_mb=4000,
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita evaluate --samples {input.samples} --reference {input.reference} --system '{params.system}'"
        " {params.flags} --seed {params.seed} --out {params.outdir} --metrics {output.metrics} > {log} 2>&1"
