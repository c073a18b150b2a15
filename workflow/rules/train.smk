def previous_checkpoint(w):
    """Warm start: rung k starts from rung k-1's model when configured."""
    k = int(w.rung)
    if k > 0 and rung_settings(config, k, "train").get("warm_start", True):
        return f"{RUN}/rung_{k - 1}/model.pt"
    return []


rule train:
    """Rung k: train the score and energy models on the samples at T_k (GPU when configured)."""
    input:
        samples=f"{RUN}/rung_{{rung}}/samples.h5",
        init=previous_checkpoint,
    output:
        model=f"{RUN}/rung_{{rung}}/model.pt",
        losses=f"{RUN}/rung_{{rung}}/losses.csv",
    params:
        flags=step_flags("train", skip=("warm_start", "options")),
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
        "pita train --samples {input.samples} --system '{SYSTEM_ARG}' {params.init} {params.flags}"
        " --config-json '{params.options}' --device {config[device]} --seed {params.seed}"
        " --work-dir {params.work} --out {output.model} --losses-csv {output.losses} > {log} 2>&1"
