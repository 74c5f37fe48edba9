# Throughput of every variant's pre-training step against the plain DINO step
# (workflow.bench: true); the report draws its throughput figure from it.


rule bench:
    output:
        jsonl=bench_file(),
    params:
        params_file=PARAMS,
        sets=shell_sets(CLI_SETS),
        variants=" ".join(config["workflow"]["variants"]),
        archs=config["model"]["arch"],
        digest=section_hash("model.", "pretrain.", "filter.", "augment.", "data.in_chans"),
    log:
        f"logs/{EXP}/bench.log",
    benchmark:
        f"benchmarks/{EXP}/bench.tsv"
    threads: config["workflow"]["threads"]["pretrain"]
    resources:
        **pretrain_resources(),
    conda:
        FOLK_ENV
    shell:
        logged("folk bench --config {params.params_file} {params.sets} "
               "--variants {params.variants} --archs {params.archs} --out {output.jsonl}")
