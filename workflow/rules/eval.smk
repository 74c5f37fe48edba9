# Evaluations: `folk eval TASK` of each run, the tasks from workflow.evals (main grid;
# workflow.eval_variants restricts which variants) or workflow.ablation_evals. Each reads
# the run's DONE.json/backbone.pt; robustness also the fine-tuned classifier.


rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        metrics=eval_metrics("{run}", "{task}"),
    params:
        params_file=PARAMS,
        sets=shell_sets(eval_sets()),
        run_dir=lambda wildcards, input: os.path.dirname(input.done),
        digest=lambda wildcards: eval_hash(wildcards.task),
    log:
        f"logs/{EXP}/{{run}}/eval_{{task}}.log",
    benchmark:
        f"benchmarks/{EXP}/{{run}}/eval_{{task}}.tsv"
    threads: config["workflow"]["threads"]["eval"]
    resources:
        **eval_resources(),
    conda:
        FOLK_ENV
    shell:
        logged("folk eval {wildcards.task} --run {params.run_dir} --config {params.params_file} "
               "{params.sets}")
