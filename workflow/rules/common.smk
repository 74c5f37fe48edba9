# Shared helpers of the workflow: which params file drives it, the list of pre-training runs
# (main grid and ablations), the paths of every rule's files, the per-rule parameter hashes
# that make Snakemake rerun only the jobs whose parameters changed, and threads/resources.
# No rules here (Snakemake's linter wants functions and rules apart); the checks at the end
# run when the Snakefile includes this file, before any job.

import copy
import hashlib
import json
import os
import re
import shlex
import sys

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from folk.ablations import ablations
from folk.config import check_filter_radii, load_config, read_params
from folk.errors import ConfigError, FolkError
from folk.eval_tasks import TASKS
from folk.launch.resources import check_workflow_slurm, rule_resources
from folk.report.summary import CURVES

# The conda environment of every rule (used with --software-deployment-method conda);
# environment.post-deploy.sh installs the folk package into it.
FOLK_ENV = "../../environment.yml"

DEFAULT_PARAMS = "params/demo.yaml"
RANDOM_INIT_RUN = "random_init"  # the reference run of the backbone's initialisation
EVAL_TASKS = tuple(TASKS)
# the keys each `folk prepare` reads (prefixes): a change reruns that preparation only
PREPARE_KEYS = {
    "data": ("data.dataset", "data.root", "data.source", "data.train_split",
             "data.test_split", "data.num_classes", "experiment.seed"),
    "fewshot": ("data.dataset", "data.root", "data.train_split", "data.num_classes",
                "eval.fewshot.fractions", "eval.fewshot.shots", "eval.fewshot.seeds"),
    "segmentation": ("eval.segmentation.dataset", "eval.segmentation.root",
                     "eval.segmentation.composite_", "data.root", "experiment.seed"),
}
# the keys a pre-training run may change without being another run; mirrors
# folk.config.RESUMABLE_CHANGES (tests/test_workflow.py checks they agree)
RESUMABLE_CHANGES = ("data.root", "data.num_workers", "pretrain.checkpoint_every",
                     "pretrain.log_every", "launch.", "slurm.", "eval.", "workflow.",
                     "experiment.dataset_note")


# ------------------------------------------------------------------ the params file

def params_file():
    """The one params file this invocation reads: the last --configfile, else the default.
    A path inside the working directory is given relative, so shell commands stay short."""
    files = [str(f) for f in workflow.overwrite_configfiles] or [DEFAULT_PARAMS]
    if len(files) > 1:
        raise WorkflowError(
            "give one params file with --configfile (it is passed to every `folk` command "
            f"as --config), got {len(files)}: {', '.join(files)}")
    path = files[0]
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else os.path.abspath(path)


def _flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and f"{prefix}{key}" != "slurm.extra_sbatch":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def cli_overrides():
    """Snakemake's own --config KEY=VALUE items, as folk `--set` items (dotted keys).
    Snakemake keeps nested values as strings; folk reads each value as YAML."""
    given = workflow.config_settings.config or {}
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}"
            for k, v in sorted(_flatten(given).items())]


def check_with_folk(path, overrides):
    """folk's own validation of the params file (its messages name the file and the key),
    before Snakemake's schema check and before any job; the configuration as folk reads it."""
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        raise WorkflowError(f"invalid params: {exc}") from None


def check_workflow_keys(cfg, source):
    """The workflow keys that folk itself does not read."""
    from folk.variants import VARIANTS

    name = cfg["experiment"]["name"]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise WorkflowError(f"invalid params: {source}: key 'experiment.name' = {name!r} must "
                            "be a plain directory name (letters, digits, '_', '.', '-')")
    wf = cfg["workflow"]
    seed = cfg["experiment"]["seed"]
    if seed in wf["seeds"] or len(set(wf["seeds"])) != len(wf["seeds"]):
        raise WorkflowError(f"invalid params: {source}: key 'workflow.seeds' = {wf['seeds']} "
                            f"repeats a seed (experiment.seed = {seed} is the first)")
    for key, names in (("workflow.ablation_variant", [wf["ablation_variant"]]),
                       ("workflow.eval_variants", wf["eval_variants"])):
        for name in names:
            if name not in VARIANTS:
                raise WorkflowError(f"invalid params: {source}: key '{key}' has unknown "
                                    f"variant {name!r}; known: {sorted(VARIANTS)}")
    for name in wf["seed_variants"]:
        if name not in wf["variants"]:
            raise WorkflowError(f"invalid params: {source}: key 'workflow.seed_variants' has "
                                f"{name!r}, which is not in workflow.variants = {wf['variants']}")


# ------------------------------------------------------------------ runs

def build_runs(cfg, grids):
    """run name -> {variant, ablation, sets (the run's --set items), evals}, in order:
    the main grid (workflow.variants), then each ablation grid (``grids``, folk's reading
    of workflow.ablations) applied to workflow.ablation_variant. Every run's name and
    ablation go into its config so that the report reads them rather than parsing
    directory names."""
    wf = cfg["workflow"]
    full = set(wf["eval_variants"] or wf["variants"])
    runs = {}

    def add(name, variant, ablation, sets, evals):
        if name in runs:
            raise WorkflowError(f"two runs would share the directory name '{name}'; "
                                "remove the duplicate from workflow.variants/ablations")
        runs[name] = {
            "variant": variant, "ablation": ablation, "evals": list(evals),
            "sets": [f"pretrain.variant={variant}", f"experiment.run_name={name}",
                     f"experiment.ablation={ablation}"] + sets,
        }

    for variant in wf["variants"]:
        add(variant, variant, "", [],
            wf["evals"] if variant in full else wf["ablation_evals"])
    base = wf["ablation_variant"]
    if wf["random_init"]:
        add(RANDOM_INIT_RUN, base, "", ["pretrain.epochs=0"],
            list(wf["evals"]) + (["pixels"] if wf["pixel_baseline"] else []))
    for seed in wf["seeds"]:  # the main grid again: the report shows the spread over seeds
        for variant in wf["seed_variants"] or wf["variants"]:
            add(f"{variant}-seed{seed}", variant, "", [f"experiment.seed={seed}"],
                wf["seed_evals"])
        if wf["random_init"]:
            add(f"{RANDOM_INIT_RUN}-seed{seed}", base, "",
                ["pretrain.epochs=0", f"experiment.seed={seed}"], wf["seed_evals"])
    for grid in grids.values():
        for value in grid.values:
            add(grid.run_name(base, value), base, grid.name, grid.sets(value),
                wf["ablation_evals"])
    return runs


def _apply_sets(cfg, sets):
    out = copy.deepcopy(cfg)
    for item in sets:
        key, raw = item.split("=", 1)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = yaml.safe_load(raw) if raw else ""  # as folk's --set reads it
    return out


def _digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def run_hash(run):
    """Digest of what defines a run (its configuration without RESUMABLE_CHANGES keys):
    a rule parameter, so that Snakemake's params trigger reruns exactly the runs whose
    configuration changed."""
    flat = _flatten(_apply_sets(config, RUNS[run]["sets"]))
    return _digest({k: v for k, v in flat.items() if not k.startswith(RESUMABLE_CHANGES)})


def eval_hash(task):
    """Digest of the eval keys one task reads (folk.eval_tasks: robustness and few-shot
    also fine-tune's, the raw pixels no backbone's)."""
    ev = config["eval"]
    return _digest({key: ev[key] for key in TASKS[task].reads})


def section_hash(*keys):
    """Digest of some config keys (dotted), for the data preparation rules."""
    flat = _flatten(config)
    return _digest({k: v for k, v in flat.items() if k.startswith(keys)})


def shell_sets(sets):
    """`--set k=v ...`, quoted for the shell."""
    return " ".join(f"--set {shlex.quote(s)}" for s in sets)


# ------------------------------------------------------------------ paths

def data_manifest():
    return os.path.join(config["data"]["root"], "manifest.json")


def fewshot_index():
    # written by `folk prepare fewshot` (folk.data.subsets.FEWSHOT_DIR)
    return os.path.join(config["data"]["root"], "fewshot", "lists.json")


def segmentation_dataset():
    """`folk prepare` name of the segmentation set: composite (built) or ade20k (checked)."""
    return {"fashion_mnist_composite": "composite"}.get(
        config["eval"]["segmentation"]["dataset"], config["eval"]["segmentation"]["dataset"])


def segmentation_inputs():
    """The composite set is cut from the prepared Fashion-MNIST; ADE20K is checked alone."""
    return [data_manifest()] if segmentation_dataset() == "composite" else []


def segmentation_manifest():
    return os.path.join(config["eval"]["segmentation"]["root"], "manifest.json")


def run_file(run, *parts):
    return os.path.join(RUNS_DIR, run, *parts)


def eval_metrics(run, task):
    return run_file(run, "eval", task, "metrics.json")


def prepared_files():
    """name -> file of each folk.eval_tasks.INPUTS that `folk prepare` writes."""
    return {"data": data_manifest(), "fewshot_lists": fewshot_index(),
            "segmentation": segmentation_manifest()}


def all_prepared():
    """Every manifest the evaluations need (not all: a workflow without few-shot or
    segmentation does not prepare their data); the classification data always."""
    needed = {"data"} | {i for r in RUNS.values() for t in r["evals"] for i in TASKS[t].inputs}
    return [path for name, path in prepared_files().items() if name in needed]


def all_pretrained():
    return [run_file(run, name) for run in RUNS for name in ("DONE.json", "backbone.pt")]


def all_evaluated():
    return [eval_metrics(run, task) for run, r in RUNS.items() for task in r["evals"]]


def bench_file():
    return os.path.join(RUNS_DIR, "bench.jsonl")


def bench_data_file():
    # beside bench.jsonl: `folk report` reads both (folk.report.collect.collect_bench)
    return os.path.join(RUNS_DIR, "bench_data.jsonl")


def bench_data_variant():
    """The variant whose input path `folk bench --data` measures: the method's own when the
    grid has it (the augmentation preset follows the variant), else the grid's first."""
    variants = config["workflow"]["variants"]
    return "folk" if "folk" in variants else variants[0]


def results_file(*parts):
    """A file of the experiment's results directory (results/<experiment.name>/)."""
    return os.path.join(RESULTS_DIR, *parts)


def curve_files():
    """The per-run curve files `folk report` writes (folk.report.summary.curve_runs: the
    main grid and its seeds, not the ablations nor the random initialisation), marked for
    Snakemake's report: category Curves, a subcategory per kind of record, labelled by run
    (one label only: the report would make a second one with two values a toggle)."""
    return [report(results_file("plots", kind, f"{run}.csv"), caption="../report/curve.rst",
                   category="Curves", subcategory=f"{kind} records", labels={"run": run})
            for kind in CURVES for run, r in RUNS.items()
            if not r["ablation"] and _apply_sets(config, r["sets"])["pretrain"]["epochs"] > 0]


def report_inputs():
    out = all_pretrained() + all_evaluated()
    if config["workflow"]["bench"]:
        out += [bench_file(), bench_data_file()]
    return out


def eval_inputs(wildcards):
    """What `folk eval TASK` reads besides the run, as folk.eval_tasks declares: its
    dataset, the few-shot lists or the segmentation set, the fine-tuned classifier."""
    run, task = wildcards.run, wildcards.task
    files = {**prepared_files(), "finetune": eval_metrics(run, "finetune")}
    out = {"done": run_file(run, "DONE.json"), "backbone": run_file(run, "backbone.pt")}
    out.update({name: files[name] for name in TASKS[task].inputs})
    return out


def eval_sets():
    """CLI overrides an evaluation may take (folk eval accepts eval.* keys only)."""
    return [s for s in CLI_SETS if s.startswith("eval.")]


# ------------------------------------------------------------------ launch, resources

def put_folk_on_path():
    """Jobs run `folk`: the one installed beside this Snakemake comes first on PATH, so
    `.venv/bin/snakemake` works without activating the venv (a conda env of a rule,
    activated inside the job, still comes before it)."""
    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if os.path.isfile(os.path.join(bindir, "folk")) and bindir not in path.split(os.pathsep):
        os.environ.update(PATH=os.pathsep.join([bindir, path]) if path else bindir)




def pretrain_command():
    """`folk pretrain` trains in the job; with launch.executor local/slurm the job submits
    through submitit and blocks until the training job ends (`folk launch --wait`)."""
    return "folk launch --wait" if launched() else "folk pretrain"


def launched():
    """Pre-training goes through submitit (launch.executor local or slurm): the workflow
    job only submits and waits, on the machine that runs Snakemake, with one thread."""
    return config["launch"]["executor"] != "none"


def pretrain_threads():
    return 1 if launched() else config["workflow"]["threads"]["pretrain"]


def job_executor():
    """The executor Snakemake sends this run's jobs to, as its command line or a profile
    names it (local by default); a dry run counts as the executor it stands for, so that
    `snakemake -n --executor slurm` lists what SLURM would be asked for.
    Snakemake tells a workflow its executor only when the jobs run (workflow.executor_plugin,
    the `dryrun` pseudo-executor in a dry run), after the rules and their resources are
    defined; its command line has parsed it before reading the Snakefile, so it is taken
    from there: the arguments of snakemake.cli.args_to_api, a caller on the stack.
    Snakemake driven through its Python API has no such caller; its jobs are taken to go
    to SLURM, as a local job with cluster resources still runs and a SLURM job without them
    lands on the default partition without GPUs."""
    frame = sys._getframe()
    while frame is not None:
        if (frame.f_code.co_name == "args_to_api"
                and frame.f_globals.get("__name__") == "snakemake.cli"):
            return getattr(frame.f_locals.get("args"), "executor", None) or "local"
        frame = frame.f_back
    return "slurm"


def pretrain_resources():
    if launched():  # the training job's resources are submitit's (the slurm section)
        return {}
    return rule_resources(config, "pretrain", JOB_EXECUTOR)


def eval_resources():
    """Partition, GPUs (one process: tasks=0, see folk.launch.resources), CPUs, memory and
    time limit of a `folk eval` job, from the slurm section, when the job goes to SLURM."""
    return rule_resources(config, "eval", JOB_EXECUTOR)


# ------------------------------------------------------------------ shell lines

def logged(command):
    """The shell line of a rule: ``command`` with its output appended to the rule's log
    (Snakemake shows the log of a failed job: show-failed-logs, in the workflow profile
    profiles/default). Snakemake deletes a job's ``log:`` files before it runs, which would
    lose the log of the very attempt a rerun resumes; so ``{log}`` is remade as a link to
    ``{log}.all``, which every attempt appends to after a header line. The link is made
    inside the redirection so that the line still starts with the command (what
    `snakemake -n -p` shows)."""
    keep = ('"$(ln -sfn "$(basename {log}).all" {log} && '
            'echo "== $(date -u -Iseconds) attempt on $(hostname)" >> {log} && echo {log})"')
    return "%s >> %s 2>&1" % (command, keep)


# ------------------------------------------------------------------ checked before any job

put_folk_on_path()
JOB_EXECUTOR = job_executor()
PARAMS = params_file()
CLI_SETS = cli_overrides()
FOLK_CONFIG = check_with_folk(PARAMS, CLI_SETS)
# the file as folk reads it (Snakemake's YAML reading makes booleans of on/off/yes/no)
config.update(read_params(PARAMS))
config.update(_apply_sets(config, CLI_SETS))  # the --config values, typed as folk reads them
# the generated schema (`folk schema`) also fills every default into `config`
validate(config, "../schemas/config.schema.yaml", set_default=True)
check_workflow_keys(config, PARAMS)
if launched():
    try:  # bad executor options fail here, before anything is submitted
        check_workflow_slurm(config)
    except FolkError as exc:
        raise WorkflowError(f"{PARAMS}: {exc}") from None

EXP = config["experiment"]["name"]
RUNS_DIR = os.path.join("runs", EXP)
RESULTS_DIR = os.path.join("results", EXP)
RUNS = build_runs(config, ablations(FOLK_CONFIG))
if any("robustness" in r["evals"] for r in RUNS.values()):
    try:  # radii that mean nothing at model.img_size fail here, not after fine-tuning
        check_filter_radii(config, PARAMS)
    except FolkError as exc:
        raise WorkflowError(f"invalid params: {exc}") from None
