# folk-repro: raw data -> pre-training of every variant -> evaluations -> ablations ->
# the paper's tables and figures. docs/pipeline.md explains the workflow.
#
#   snakemake --cores 2                                   # Fashion-MNIST demo (CPU)
#   snakemake -n --configfile params/paper.yaml           # the paper's DAG, dry run
#
# The Snakemake config IS a folk params file: every rule passes that same file to the
# `folk` CLI (--config) plus --set for what differs per run.

from snakemake.utils import min_version

min_version("9.0")


# the default params file; `--configfile F` replaces it (not merged with it), so that the
# workflow and the folk commands read exactly the same file
if not workflow.overwrite_configfiles:

    configfile: "params/demo.yaml"


include: "workflow/rules/common.smk"


# the description at the top of `snakemake --report`: what the experiment is, its parameters
report: "workflow/report/workflow.rst"


wildcard_constraints:
    run="|".join(re.escape(r) for r in RUNS) or "(?!)",
    task="|".join(EVAL_TASKS),


include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/report.smk"


# Every output of the report (so that one a newer version declares brings the report back)
# and every input of it: the results are committed to git and a fresh clone has them, but not
# the runs behind them; the runs are asked for, and once made they are newer than the results.
rule all:
    default_target: True
    input:
        rules.report.output,
        report_inputs(),


# Stage targets (`snakemake <rule>`); dvc.yaml runs the workflow through them.
rule prepared:
    input:
        all_prepared(),


rule pretrained:
    input:
        all_pretrained(),


rule evaluated:
    input:
        all_evaluated(),
