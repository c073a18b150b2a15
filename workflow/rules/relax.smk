rule relax:
    """Rung k > 0: resample by the weights (or bridge), then move with the true forces at T_k."""
    input:
        weighted=f"{RUN}/rung_{{later}}/weighted.h5",
        model=lambda w: f"{RUN}/rung_{int(w.later) - 1}/model.pt",
    output:
        samples=f"{RUN}/rung_{{later}}/samples.h5",
        diagnostics=f"{RUN}/rung_{{later}}/relax_diagnostics.json",
    params:
        system=SYSTEM_ARG,
        device=job_device(),
        temperature=temperature,
        settings=settings_json("relax"),
        seed=job_seed(3),
    log:
        f"{RUN}/logs/relax_{{later}}.log",
    benchmark:
        f"{RUN}/benchmarks/relax_{{later}}.tsv"
    threads: config["threads"]
    priority: CHAIN_PRIORITY
    resources:
        **job_resources("relax", True),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita relax --samples {input.weighted:q} --system {params.system:q} --temperature {params.temperature}"
        " --config-json {params.settings:q} --device {params.device:q} --seed {params.seed} --rung {wildcards.later}"
        " --checkpoint {input.model:q} --diagnostics {output.diagnostics:q} --out {output.samples:q} > {log:q} 2>&1"
