rule relax:
    """Rung k > 0: resample by the weights (or bridge), then move with the true forces at T_k."""
    input:
        weighted=f"{RUN}/rung_{{later}}/weighted.h5",
    output:
        samples=f"{RUN}/rung_{{later}}/samples.h5",
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
        " {params.flags} --device {params.device} --seed {params.seed} --out {output.samples} > {log} 2>&1"
