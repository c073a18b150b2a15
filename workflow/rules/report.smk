rule report:
    """All rungs' metrics (and the baselines', when enabled) -> summary.csv and a self-contained HTML report."""
    input:
        metrics=expand(f"{RUN}/rung_{{rung}}/metrics.json", rung=range(K + 1)),
        baselines=baseline_metrics(),
    output:
        summary=f"{RUN}/summary.csv",
        html=report(f"{RUN}/report.html", caption="../report/report.rst", category="Summary"),
    log:
        f"{RUN}/logs/report.log",
    threads: 1
    resources:
        **job_resources("report"),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita report --metrics {input.metrics:q} {input.baselines:q} --summary {output.summary:q}"
        " --out {output.html:q} > {log:q} 2>&1"
