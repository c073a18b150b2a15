rule train:
    """Rung k: train the score and energy models on the samples at T_k (GPU when configured)."""
    input:
        samples=f"{RUN}/rung_{{rung}}/samples.h5",
        init=previous_checkpoint,
    output:
        model=f"{RUN}/rung_{{rung}}/model.pt",
        losses=f"{RUN}/rung_{{rung}}/losses.csv",
    params:
        system=SYSTEM_ARG,
        device=config["device"],
        options=lambda w: json.dumps(rung_settings(config, int(w.rung), "train"), sort_keys=True),
        init=lambda w, input: f"--init {input.init}" if input.init else "",
        seed=lambda w: config["seed"] + 1000 * int(w.rung) + 1,
        work=f"{RUN}/.work/train",
    log:
        f"{RUN}/logs/train_{{rung}}.log",
    benchmark:
        f"{RUN}/benchmarks/train_{{rung}}.tsv"
    threads: config["threads"]
    resources:
        runtime=240,
        mem_mb=8000,
        **gpu_resources(),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita train --samples {input.samples} --system '{params.system}' {params.init}"
        " --config-json '{params.options}' --device {params.device} --seed {params.seed} --threads {threads} --no-progress"
        " --work-dir {params.work} --out {output.model} --losses-csv {output.losses} > {log} 2>&1"
