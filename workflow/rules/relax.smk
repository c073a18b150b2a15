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
        device=config["device"],
        temperature=lambda w: TEMPS[int(w.later)],
        flags=step_flags("relax"),
        seed=lambda w: config["seed"] + 1000 * int(w.later) + 3,
    log:
        f"{RUN}/logs/relax_{{later}}.log",
    benchmark:
        f"{RUN}/benchmarks/relax_{{later}}.tsv"
    threads: config["threads"]
    resources:
        runtime=120,
        mem_mb=4000,
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita relax --samples {input.weighted} --system '{params.system}' --temperature {params.temperature}"
        " {params.flags} --device {params.device} --seed {params.seed} --rung {wildcards.later}"
        " --checkpoint {input.model} --diagnostics {output.diagnostics} --out {output.samples} > {log} 2>&1"
