# The paper's tables and figures from every run of the DAG (`folk report` reads each
# run's config.yaml, metrics.jsonl, DONE.json and eval/*/metrics.json), in
# results/<experiment.name>/: README.md stands for its tables and figures; metrics.json,
# provenance.json and the curves are the files DVC reads (dvc.yaml: metrics, plots).


rule report:
    input:
        report_inputs(),
    output:
        readme=results_file("README.md"),
        metrics=results_file("metrics.json"),
        provenance=results_file("provenance.json"),
        curves=curve_files(),
    params:
        runs_dir=lambda wildcards: RUNS_DIR,
        out_dir=lambda wildcards, output: os.path.dirname(output.readme),
        readme="--readme README.md" if config["workflow"]["readme_headline"] else "",
    log:
        f"logs/{EXP}/report.log",
    benchmark:
        f"benchmarks/{EXP}/report.tsv"
    threads: config["workflow"]["threads"]["report"]
    conda:
        FOLK_ENV
    shell:
        logged("folk report --runs {params.runs_dir} --out {params.out_dir} {params.readme}")
