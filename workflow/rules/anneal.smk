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
        device=config["device"],
        temperature=lambda w: TEMPS[int(w.later)],
        flags=step_flags("anneal"),
        seed=lambda w: config["seed"] + 1000 * int(w.later) + 2,
    log:
        f"{RUN}/logs/anneal_{{later}}.log",
    benchmark:
        f"{RUN}/benchmarks/anneal_{{later}}.tsv"
    threads: config["threads"]
    resources:
        runtime=240,
        mem_mb=8000,
        **gpu_resources(),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita anneal --checkpoint {input.model} --samples-in {input.samples} --system '{params.system}'"
        " --temperature {params.temperature} {params.flags} --device {params.device} --seed {params.seed} --rung {wildcards.later}"
        " --out {output.weighted} --diagnostics {output.diagnostics} > {log} 2>&1"
