# The paper's tables and figures from every run of the DAG (`folk report` reads each
# run's config.yaml, metrics.jsonl, DONE.json and eval/*/metrics.json). results/README.md
# is written by the same command and stands for the whole results/ directory.


rule report:
    input:
        report_inputs(),
    output:
        readme="results/README.md",
    params:
        runs_dir=lambda wildcards: RUNS_DIR,
        out_dir=lambda wildcards, output: os.path.dirname(output.readme),
    log:
        f"logs/{EXP}/report.log",
    benchmark:
        f"benchmarks/{EXP}/report.tsv"
    threads: config["workflow"]["threads"]["report"]
    conda:
        FOLK_ENV
    shell:
        logged("folk report --runs {params.runs_dir} --out {params.out_dir}")
