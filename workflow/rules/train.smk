rule train:
    """Rung k: train the score and energy models on the samples at T_k (GPU when configured)."""
    input:
        samples=f"{RUN}/rung_{{rung}}/samples.h5",
        init=previous_checkpoint,
    output:
        model=f"{RUN}/rung_{{rung}}/model.pt",
        losses=f"{RUN}/rung_{{rung}}/losses.csv",
        fidelity=f"{RUN}/rung_{{rung}}/model_fidelity.json",
    params:
        system=SYSTEM_ARG,
        device=job_device(),
        settings=settings_json("train"),
        init=lambda w, input: ["--init", input.init] if input.init else [],
        seed=job_seed(1),
        next_temperature=lambda w: TEMPS[int(w.rung) + 1],
        work=f"{RUN}/.work/train",
    log:
        f"{RUN}/logs/train_{{rung}}.log",
    benchmark:
        f"{RUN}/benchmarks/train_{{rung}}.tsv"
    threads: config["threads"]
    priority: CHAIN_PRIORITY
    resources:
        **job_resources("train", True),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita train --samples {input.samples:q} --system {params.system:q} {params.init:q}"
        " --config-json {params.settings:q} --device {params.device:q} --seed {params.seed} --threads {threads}"
        " --next-temperature {params.next_temperature} --no-progress --work-dir {params.work:q} --out {output.model:q}"
        " --losses-csv {output.losses:q} --diagnostics {output.fidelity:q} > {log:q} 2>&1"
