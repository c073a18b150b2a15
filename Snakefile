# PITA: Progressive Inference-Time Annealing, one rule per step and rung.
#   md_seed(T_0) -> train(0) -> anneal(0->1) -> relax(1) -> train(1) -> ... -> relax(K)
#   reference_md(T_k) ------------------------------------------> evaluate(k) -> report
#   md_seed -> plan_budget -> baseline(md | replica_exchange | smc) -> evaluate_baseline -> report (optional)
from snakemake.utils import min_version

min_version("8.0")


# config.yaml is the default run; a --configfile (workflow/configs/*.yaml) is a complete config
# that replaces it rather than being merged into it
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"



include: "workflow/rules/common.smk"
include: "workflow/rules/md_seed.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/anneal.smk"
include: "workflow/rules/relax.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
