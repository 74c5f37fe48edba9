# Data preparation: each rule runs `folk prepare`, which checks the layout (missing split,
# empty class, unreadable image) and writes a manifest (counts, checksums) before any
# training starts. The manifests are the rule outputs; the data around them is not, so a
# failed check never deletes a user's dataset.


rule prepare_data:
    output:
        manifest=data_manifest(),
    params:
        dataset=config["data"]["dataset"],
        params_file=PARAMS,
        sets=shell_sets(CLI_SETS),
        digest=section_hash(*PREPARE_KEYS["data"]),
    log:
        f"logs/{EXP}/prepare/data.log",
    benchmark:
        f"benchmarks/{EXP}/prepare/data.tsv"
    threads: config["workflow"]["threads"]["prepare"]
    conda:
        FOLK_ENV
    shell:
        logged("folk prepare {params.dataset} --config {params.params_file} {params.sets}")


rule prepare_fewshot:
    input:
        data=data_manifest(),
    output:
        lists=fewshot_index(),
    params:
        params_file=PARAMS,
        sets=shell_sets(CLI_SETS),
        digest=section_hash(*PREPARE_KEYS["fewshot"]),
    log:
        f"logs/{EXP}/prepare/fewshot.log",
    benchmark:
        f"benchmarks/{EXP}/prepare/fewshot.tsv"
    threads: config["workflow"]["threads"]["prepare"]
    conda:
        FOLK_ENV
    shell:
        logged("folk prepare fewshot --config {params.params_file} {params.sets}")


rule prepare_segmentation:
    input:
        data=segmentation_inputs(),
    output:
        manifest=segmentation_manifest(),
    params:
        dataset=segmentation_dataset(),
        params_file=PARAMS,
        sets=shell_sets(CLI_SETS),
        digest=section_hash(*PREPARE_KEYS["segmentation"]),
    log:
        f"logs/{EXP}/prepare/segmentation.log",
    benchmark:
        f"benchmarks/{EXP}/prepare/segmentation.tsv"
    threads: config["workflow"]["threads"]["prepare"]
    conda:
        FOLK_ENV
    shell:
        logged("folk prepare {params.dataset} --config {params.params_file} {params.sets}")
