# The paper's tables and figures from every run of the DAG (`folk report` reads each
# run's config.yaml, metrics.jsonl, DONE.json and eval/*/metrics.json), in
# results/<experiment.name>/: README.md stands for its tables and figures; metrics.json,
# provenance.json and the curves are the files DVC reads (dvc.yaml: metrics, plots).
#
# `snakemake --report results/<experiment.name>/report.html` shows the outputs marked
# with report(): each table's HTML page, each figure, the runs' configurations and the
# curves, with the captions of workflow/report/. tables/ and figures/ are directories:
# which tables exist depends on the runs folk reads (an ablation sweep makes its own), so
# the report takes whatever `folk report` wrote there.


rule report:
    input:
        report_inputs(),
    output:
        readme=results_file("README.md"),
        metrics=results_file("metrics.json"),
        provenance=results_file("provenance.json"),
        tables=report(
            directory(results_file("tables")),
            patterns=["{name}.html"],
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{name}"},
        ),
        figures=report(
            directory(results_file("figures")),
            patterns=["{name}.png"],
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{name}"},
        ),
        runs=report(
            results_file("runs.html"),
            caption="../report/runs.rst",
            category="Runs",
            labels={"page": "runs and their configuration"},
        ),
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
