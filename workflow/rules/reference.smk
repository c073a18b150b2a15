rule reference_md:
    """Reference samples at T_k for evaluation: a configured set (checked), else MD (reported apart)."""
    input:
        # a configured reference set is an input: replacing the file reruns what uses it
        given=lambda w: reference_file(int(w.rung)) or [],
    output:
        samples=f"{RUN}/reference/rung_{{rung}}.h5",
    params:
        system=SYSTEM_ARG,
        temperature=temperature,
        given=lambda w, input: ["--given", input.given] if input.given else [],
        # cross_check and basin_free_energies are read by evaluate: changing them must not rerun reference MD
        settings=settings_json("reference", drop=("cross_check", "basin_free_energies")),
        seed=job_seed(7),
        device=job_device(reference_uses_gpu),
    log:
        f"{RUN}/logs/reference_md_{{rung}}.log",
    benchmark:
        f"{RUN}/benchmarks/reference_md_{{rung}}.tsv"
    threads: config["threads"]
    resources:
        **job_resources("reference_md", reference_uses_gpu),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita reference --system {params.system:q} --temperature {params.temperature} --rung {wildcards.rung}"
        " {params.given:q} --config-json {params.settings:q} --device {params.device:q} --seed {params.seed}"
        " --no-progress --out {output.samples:q} > {log:q} 2>&1"
