rule reference_md:
    """Reference MD at T_k for evaluation (evaluations reported separately from PITA's)."""
    input:
        # a configured reference set is an input: replacing the file reruns what uses it
        given=lambda w: reference_file(int(w.rung)) or [],
    output:
        samples=f"{RUN}/reference/rung_{{rung}}.h5",
    params:
        system=SYSTEM_ARG,
        temperature=lambda w: TEMPS[int(w.rung)],
        settings=lambda w: json.dumps({k: v for k, v in rung_settings(config, int(w.rung), "reference").items() if k != "files"}, sort_keys=True),
        seed=lambda w: config["seed"] + 1000 * int(w.rung) + 7,
    log:
        f"{RUN}/logs/reference_md_{{rung}}.log",
    benchmark:
        f"{RUN}/benchmarks/reference_md_{{rung}}.tsv"
    threads: config["threads"]
    resources:
        runtime=600,
        mem_mb=4000,
    conda:
        "../../envs/pita.yaml"
    shell:
        "if [ -n '{input.given}' ]; then"
        "  python -c 'import sys; from pita.samples import SampleSet;"
        " SampleSet.read(sys.argv[1], temperature=float(sys.argv[2])).write(sys.argv[3])'"
        " {input.given} {params.temperature} {output.samples} > {log} 2>&1;"
        " else pita md --system '{params.system}' --temperature {params.temperature} --rung {wildcards.rung} --config-json '{params.settings}'"
        " --seed {params.seed} --out {output.samples} > {log} 2>&1; fi"
