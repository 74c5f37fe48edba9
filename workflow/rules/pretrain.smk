# Pre-training: one job per run of the main grid (workflow.variants) and of the ablation
# grids (workflow.ablations). Only DONE.json and backbone.pt are outputs: Snakemake deletes
# the outputs of a failed job, and checkpoints/last.pt must survive so that running the
# workflow again resumes the run. The run's name and ablation go into its config.yaml.
# With launch.executor local/slurm the job submits the training through submitit and
# waits for it (`folk launch --wait`), so it runs where Snakemake runs.

if launched():

    localrules:
        pretrain,


rule pretrain:
    input:
        data=data_manifest(),
    output:
        done=run_file("{run}", "DONE.json"),
        backbone=run_file("{run}", "backbone.pt"),
    params:
        command=pretrain_command(),
        params_file=PARAMS,
        sets=lambda wildcards: shell_sets(CLI_SETS + RUNS[wildcards.run]["sets"]),
        run_dir=lambda wildcards, output: os.path.dirname(output.done),
        digest=lambda wildcards: run_hash(wildcards.run),
    log:
        f"logs/{EXP}/{{run}}/pretrain.log",
    benchmark:
        f"benchmarks/{EXP}/{{run}}/pretrain.tsv"
    threads: pretrain_threads()
    resources:
        **pretrain_resources(),
    conda:
        FOLK_ENV
    shell:
        logged("{params.command} --config {params.params_file} {params.sets} "
               "--out {params.run_dir}")
