# Trajectories for VMD / PyMOL (config `export`, on by default): the final rung's samples (or every
# rung's) in each configured format, through `pita export` (mdtraj's public writers), with one PDB
# topology per rung: vmd results/<run>/export/rung_K.topology.pdb results/<run>/export/rung_K.dcd


rule export:
    """Rung k's samples as trajectories (export.formats) and a PDB topology (its first frame)."""
    input:
        samples=f"{RUN}/rung_{{rung}}/samples.h5",
    output:
        trajectories=[f"{RUN}/export/rung_{{rung}}.{fmt}" for fmt in EXPORT.get("formats", ["dcd"])],
        topology=f"{RUN}/export/rung_{{rung}}.topology.pdb",
    params:
        system=SYSTEM_ARG,
        superpose=["--superpose"] if EXPORT.get("superpose", False) else [],
    log:
        f"{RUN}/logs/export_{{rung}}.log",
    threads: 1
    resources:
        **job_resources("export"),
    conda:
        "../../envs/pita.yaml"
    shell:
        "pita export --samples {input.samples:q} --system {params.system:q} {params.superpose:q}"
        " --out {output.trajectories:q} --pdb {output.topology:q} > {log:q} 2>&1"
