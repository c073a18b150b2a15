rule report:
    """All rungs' metrics (relaxed sets, the anneals' weighted sets, and the baselines' when
    enabled), ESS traces, losses and the jobs' benchmarks -> summary.csv, the cost per method,
    report figures and a self-contained HTML report. Every output is declared with report() for
    `snakemake --report`."""
    input:
        metrics=expand(f"{RUN}/rung_{{rung}}/metrics.json", rung=range(K + 1)),
        # each anneal's weighted set before relaxation (rule evaluate_annealed): the model's own share
        annealed=expand(f"{RUN}/rung_{{k}}/annealed_metrics.json", k=range(1, K + 1)),
        baselines=baseline_metrics(),
        diagnostics=expand(f"{RUN}/rung_{{k}}/anneal_diagnostics.json", k=range(1, K + 1)),
        losses=expand(f"{RUN}/rung_{{k}}/losses.csv", k=range(K)),
        benchmarks=cost_benchmarks(),
    output:
        summary=report(f"{RUN}/summary.csv", caption="../report/summary.rst", category="Summary"),
        html=report(f"{RUN}/report.html", caption="../report/report.rst", category="Summary"),
        cost=report(f"{RUN}/cost.csv", caption="../report/cost.rst", category="Summary"),
        accuracy=report(f"{RUN}/figures/accuracy_vs_cost.png", caption="../report/accuracy.rst",
                        category="Baselines"),
        ess=report(f"{RUN}/figures/ess_traces.png", caption="../report/ess.rst", category="Diagnostics"),
        losses=report(f"{RUN}/figures/losses.png", caption="../report/losses.rst", category="Diagnostics"),
    params:
        gpu_jobs=["--gpu-jobs", *gpu_jobs()] if USE_GPU else [],
    log:
        f"{RUN}/logs/report.log",
    benchmark:
        f"{RUN}/benchmarks/report.tsv"
    threads: 1
    resources:
        **job_resources("report"),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita report --metrics {input.metrics:q} {input.annealed:q} {input.baselines:q} --summary {output.summary:q}"
        " --diagnostics {input.diagnostics:q} --losses {input.losses:q} --benchmarks {input.benchmarks:q}"
        " {params.gpu_jobs:q} --cost {output.cost:q} --ess-plot {output.ess:q} --losses-plot {output.losses:q}"
        " --accuracy-plot {output.accuracy:q} --out {output.html:q} > {log:q} 2>&1"
