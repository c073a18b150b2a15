rule md_seed:
    """Rung 0: MD at the hot temperature T_0, with energies and forces for training."""
    output:
        samples=f"{RUN}/rung_0/samples.h5",
    params:
        system=SYSTEM_ARG,
        temperature=TEMPS[0],
        settings=settings_json("md_seed"),
        seed=job_seed(0),
        device=job_device(MD_SEED_GPU),
    log:
        f"{RUN}/logs/md_seed.log",
    benchmark:
        f"{RUN}/benchmarks/md_seed.tsv"
    threads: config["threads"]
    priority: CHAIN_PRIORITY
    resources:
        **job_resources("md_seed", MD_SEED_GPU),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita md --system {params.system:q} --temperature {params.temperature} --rung 0"
        " --config-json {params.settings:q} --device {params.device:q} --seed {params.seed} --no-progress"
        " --out {output.samples:q} > {log:q} 2>&1"
