"""Read what the pipeline produced: run directories, their evaluations, bench results, and
the published reference numbers. Every reader validates what it relies on and names the
file at fault, so a malformed result stops the report instead of becoming a wrong cell."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from folk.config import load_run_config
from folk.errors import DataError, RunDirError
from folk.eval_tasks import declared_columns
from folk.evals.common import SCHEMA as EVAL_SCHEMA
from folk.metric_columns import MetricColumn, columns_problem
from folk.recipes import is_resnet
from folk.report.naming import run_backbone_label, run_dataset_label
from folk.utils.io import read_jsonl

# method labels of the reference rows (computed by the pipeline, not trained methods)
RANDOM_INIT, RAW_PIXELS, MAJORITY = "random init", "raw pixels", "majority class"
REFERENCE_METHODS = (RANDOM_INIT, RAW_PIXELS, MAJORITY)
_EVAL_KEYS = ("schema", "run", "task", "variant", "dataset", "metrics", "primary")
_DONE_KEYS = ("wall_time_s", "world_size", "device")
_SKIP_DIRS = {".snakemake", ".git", "__pycache__", "checkpoints", "eval", "submitit"}


def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise RunDirError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _finite(value) -> float | None:
    """A metric as float, or None when absent or not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class EvalResult:
    """One ``eval/<task>[-<variant>]/metrics.json``."""

    path: Path
    rel: str  # path relative to the runs directory (provenance)
    record: dict

    @property
    def task(self) -> str:
        return self.record["task"]

    @property
    def variant(self) -> str:
        return self.record["variant"] or ""

    @property
    def dataset(self) -> str:
        return self.record["dataset"]

    @property
    def metrics(self) -> dict:
        return self.record["metrics"]

    def metric(self, name: str) -> float | None:
        return _finite(self.metrics.get(name))

    @cached_property
    def columns(self) -> list[MetricColumn]:
        """The report columns of its metrics: as the record states them, or, in a record
        written before records stated them, as its task declares them (folk.eval_tasks)."""
        if "columns" in self.record:
            return [MetricColumn.from_json(c) for c in self.record["columns"]]
        return declared_columns(self.task, self.metrics, self.record["primary"])

    def column(self, metric: str) -> MetricColumn | None:
        return next((c for c in self.columns if c.metric == metric), None)

    def primary(self) -> tuple[float | None, float | None]:
        """(value, std) of the primary metric; std from its column's standard deviation
        (a multi-seed mean), or over the pre-training seeds of merged runs (``seed_std``,
        folk.report.seeds)."""
        name = self.record["primary"]
        return self.metric(name), self.spread(name)

    def spread(self, name: str) -> float | None:
        """Standard deviation of metric ``name``: over pre-training seeds when this result
        merges several runs, else the evaluation's own, named by the metric's column."""
        if "seed_std" in self.record:
            return _finite(self.record["seed_std"].get(name))
        column = self.column(name)
        return self.metric(column.std) if column is not None and column.std else None


@dataclass
class Run:
    """A pre-training run directory: resolved config plus whatever results it has so far."""

    dir: Path
    rel: str
    cfg: dict
    done: dict | None
    evals: list[EvalResult] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # of merged seed siblings (report.seeds)

    @property
    def name(self) -> str:
        return self.cfg["experiment"]["run_name"] or self.dir.name

    @property
    def experiment(self) -> str:
        return self.cfg["experiment"]["name"]

    @property
    def ablation(self) -> str:
        return self.cfg["experiment"]["ablation"] or ""

    @property
    def variant(self) -> str:
        return self.cfg["pretrain"]["variant"]

    @property
    def is_random_init(self) -> bool:
        """A run of no pre-training: its backbone is the seed's initialisation, the reference
        every trained backbone of the same architecture and data has to beat."""
        return self.cfg["pretrain"]["epochs"] == 0

    @property
    def method(self) -> str:
        """The method column of every table: the variant, or ``random init``."""
        return RANDOM_INIT if self.is_random_init else self.variant

    @property
    def arch(self) -> str:
        return self.cfg["model"]["arch"]

    @property
    def is_resnet(self) -> bool:
        return is_resnet(self.arch)

    @property
    def backbone(self) -> str:
        return run_backbone_label(self.cfg)

    @property
    def dataset(self) -> str:
        return run_dataset_label(self.cfg)

    @property
    def dataset_note(self) -> str:
        return self.cfg["experiment"]["dataset_note"] or ""

    @property
    def epochs(self) -> int:
        return self.cfg["pretrain"]["epochs"]

    @property
    def git_sha(self) -> str:
        return (self.done or {}).get("git_sha", "")

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @cached_property
    def records(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def eval(self, task: str, variant: str | None = "") -> EvalResult | None:
        """The evaluation of ``task`` (``variant=None``: the default one, else any)."""
        found = [e for e in self.evals if e.task == task]
        if variant is None:
            found.sort(key=lambda e: (e.variant != "", e.variant))
            return found[0] if found else None
        return next((e for e in found if e.variant == variant), None)

    def notes(self) -> list[str]:
        """What a reader must know to judge this run's numbers (footnote material)."""
        out = []
        if self.dataset_note:
            out.append(f"dataset note: {self.dataset_note}")
        max_it = self.cfg["pretrain"].get("max_iterations", 0)
        if max_it:
            out.append(f"stopped after {max_it} iterations (pretrain.max_iterations)")
        return out


def _find_run_dirs(root: Path) -> list[Path]:
    """Directories holding a config.yaml, not descending into a run (its eval/, checkpoints)."""
    found: list[Path] = []

    def walk(d: Path) -> None:
        if (d / "config.yaml").is_file():
            found.append(d)
            return
        for child in sorted(p for p in d.iterdir() if p.is_dir()):
            if child.name not in _SKIP_DIRS and not child.name.startswith("."):
                walk(child)

    walk(root)
    return found


def _read_eval(path: Path, runs_root: Path) -> EvalResult:
    rec = _read_json(path)
    missing = [k for k in _EVAL_KEYS if k not in rec]
    if missing:
        raise RunDirError(f"{path}: missing key(s) {missing} of the {EVAL_SCHEMA} schema")
    if rec["schema"] != EVAL_SCHEMA:
        raise RunDirError(f"{path}: schema {rec['schema']!r}, expected {EVAL_SCHEMA!r}")
    if not isinstance(rec["metrics"], dict) or rec["primary"] not in rec["metrics"]:
        raise RunDirError(f"{path}: primary metric {rec['primary']!r} not in 'metrics'")
    problem = columns_problem(rec["columns"], rec["metrics"]) if "columns" in rec else None
    if problem:
        raise RunDirError(f"{path}: {problem}")
    return EvalResult(path=path, rel=path.relative_to(runs_root).as_posix(), record=rec)


def read_run(run_dir: Path, runs_root: Path) -> Run:
    cfg = load_run_config(run_dir)
    done = None
    if (run_dir / "DONE.json").is_file():
        done = _read_json(run_dir / "DONE.json")
        missing = [k for k in _DONE_KEYS if k not in done]
        if missing:
            raise RunDirError(f"{run_dir / 'DONE.json'}: missing key(s) {missing}")
    evals = [_read_eval(p, runs_root) for p in sorted(run_dir.glob("eval/*/metrics.json"))]
    return Run(
        dir=run_dir,
        rel=run_dir.relative_to(runs_root).as_posix() or ".",
        cfg=cfg,
        done=done,
        evals=evals,
    )


def collect_runs(runs_root: Path) -> list[Run]:
    runs_root = Path(runs_root)
    if not runs_root.is_dir():
        raise RunDirError(f"runs directory not found: {runs_root}")
    return [read_run(d, runs_root) for d in _find_run_dirs(runs_root)]


@dataclass
class BenchRecord:
    path: str  # bench.jsonl relative to the runs directory
    record: dict


_BENCH_KEYS = ("variant", "arch", "images_per_s", "device")
# `folk bench --data` (folk.benchmark.input_path): the keys of every line, then those of each measure
_BENCH_DATA_KEYS = ("measure", "variant", "arch", "device")
_BENCH_DATA_MEASURE_KEYS = {
    "loader": ("pipeline", "per_core"),
    "step": ("images_per_s",),
    "whole": ("images_per_s",),
    "summary": ("loader_images_per_s", "step_images_per_s", "bound"),
}
BENCH_FILES = {"bench.jsonl": ("bench", _BENCH_KEYS), "bench_data.jsonl": ("bench_data", None)}


def _bench_missing(rec: dict, keys) -> list[str]:
    if keys is None:  # a bench_data line
        keys = _BENCH_DATA_KEYS + _BENCH_DATA_MEASURE_KEYS.get(rec.get("measure"), ())
    return [k for k in keys if k not in rec]


def collect_bench(runs_root: Path) -> list[BenchRecord]:
    """Records of type "bench" from every ``bench.jsonl`` under the runs directory, and of
    type "bench_data" (``folk bench --data``) from every ``bench_data.jsonl``."""
    out = []
    paths = sorted(p for name in BENCH_FILES for p in Path(runs_root).rglob(name))
    for path in paths:
        kind, keys = BENCH_FILES[path.name]
        for i, rec in enumerate(read_jsonl(path), 1):
            if rec.get("type") != kind:
                continue
            missing = _bench_missing(rec, keys)
            if missing:
                raise RunDirError(f"{path}: {kind} record {i} lacks key(s) {missing}")
            out.append(BenchRecord(path=path.relative_to(runs_root).as_posix(), record=rec))
    return out


# ---------------------------------------------------------------- published numbers

REFERENCE_PATH = Path(__file__).with_name("reference_numbers.csv")
REFERENCE_COLUMNS = (
    "method",
    "backbone",
    "arch",
    "pretrain_epochs",
    "pretrain_dataset",
    "task",
    "metric",
    "value",
    "eval_dataset",
    "eval_detail",
    "eval_epochs",
    "source",
    "note",
)


def load_reference(path: Path | None = None):
    """The published baseline numbers (one number per row) as a DataFrame."""
    import pandas as pd  # noqa: PLC0415  optional heavy: only the reference table reads it

    path = Path(path) if path is not None else REFERENCE_PATH
    if not path.is_file():
        raise DataError(f"reference numbers file not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in REFERENCE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {list(REFERENCE_COLUMNS)}")
    for i, row in df.iterrows():
        where = f"{path}: row {i + 2}"
        try:
            float(row["value"])
        except ValueError:
            raise DataError(f"{where}: column 'value' = {row['value']!r} is not a number") from None
        if not row["source"].strip():
            raise DataError(
                f"{where}: column 'source' is empty; every published number needs its source"
            )
    df["value"] = df["value"].astype(float)
    return df
