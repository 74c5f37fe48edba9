# Throughput of every variant's pre-training step against the plain DINO step, and of the
# input path (loader on one core against DINO's reference augmentation, the step, the two
# together) on the experiment's own data (workflow.bench: true); the report draws its
# throughput figure from both files.


rule bench:
    output:
        jsonl=bench_file(),
    params:
        params_file=PARAMS,
        sets=shell_sets(CLI_SETS),
        variants=",".join(config["workflow"]["variants"]),
        archs=config["model"]["arch"],
        batch=config["pretrain"]["batch_size"],  # the step as the runs train it
        steps=config["workflow"]["bench_steps"],
        warmup=config["workflow"]["bench_warmup"],
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
               "--variants {params.variants} --archs {params.archs} --batch-size {params.batch} "
               "--steps {params.steps} --warmup {params.warmup} --out {output.jsonl}")


rule bench_data:
    input:
        data=data_manifest(),
    output:
        jsonl=bench_data_file(),
    params:
        params_file=PARAMS,
        sets=shell_sets(CLI_SETS),
        variant=bench_data_variant(),
        archs=config["model"]["arch"],
        digest=section_hash("model.", "pretrain.", "filter.", "augment.", "data."),
    log:
        f"logs/{EXP}/bench_data.log",
    benchmark:
        f"benchmarks/{EXP}/bench_data.tsv"
    threads: config["workflow"]["threads"]["pretrain"]
    resources:
        **pretrain_resources(),
    conda:
        FOLK_ENV
    shell:
        logged("folk bench --data --config {params.params_file} {params.sets} "
               "--variants {params.variant} --archs {params.archs} --out {output.jsonl}")
