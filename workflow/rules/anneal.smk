rule anneal:
    """Rung k-1 -> k: FK-SMC from the rung k-1 model to T_k; weighted set after the exact correction."""
    input:
        model=lambda w: f"{RUN}/rung_{int(w.later) - 1}/model.pt",
        samples=lambda w: f"{RUN}/rung_{int(w.later) - 1}/samples.h5",
    output:
        weighted=f"{RUN}/rung_{{later}}/weighted.h5",
        diagnostics=f"{RUN}/rung_{{later}}/anneal_diagnostics.json",
    params:
        system=SYSTEM_ARG,
        device=job_device(),
        temperature=temperature,
        settings=settings_json("anneal"),
        seed=job_seed(2),
    log:
        f"{RUN}/logs/anneal_{{later}}.log",
    benchmark:
        f"{RUN}/benchmarks/anneal_{{later}}.tsv"
    threads: config["threads"]
    priority: CHAIN_PRIORITY
    resources:
        **job_resources("anneal", True),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita anneal --checkpoint {input.model:q} --samples-in {input.samples:q} --system {params.system:q}"
        " --temperature {params.temperature} --config-json {params.settings:q} --device {params.device:q}"
        " --seed {params.seed} --rung {wildcards.later} --out {output.weighted:q}"
        " --diagnostics {output.diagnostics:q} > {log:q} 2>&1"
