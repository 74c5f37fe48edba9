"""What the report keeps in git beside its tables and figures: ``metrics.json`` (every number
of this pipeline's table rows, read by ``dvc metrics show/diff``), one curve file per
pre-training run (``plots/train/<run>.csv`` and ``plots/knn/<run>.csv``, read by
``dvc plots show``, which names each line by its file),
``provenance.json`` (the code, machine and date behind the results), and the headline block
that the repository README shows.

The curve files have the same columns for every variant (a term the variant does not have
is an empty field), so that one DVC plot definition can overlay every run's file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
from pathlib import Path

from folk.errors import ConfigError
from folk.report.collect import Run
from folk.report.table import Table
from folk.report.writers import Stamp, to_markdown
from folk.utils.io import atomic_write_text
from folk.utils.provenance import versions

# train records' fields kept in plots/train/<run>.csv, in order; the names are the loss
# terms and the distillation diagnostics folk.engine.step logs
TRAIN_CURVE_FIELDS = (
    "iteration",
    "epoch",
    "loss",
    "loss_rec",
    "loss_kd",
    "kd_teacher_entropy",
    "kd_kl",
    "lr",
    "teacher_temp",
)
KNN_CURVE_FIELDS = ("epoch", "knn_top1")
# plots/<kind>/<run>.csv: the record type of metrics.jsonl and the fields kept
CURVES = {"train": TRAIN_CURVE_FIELDS, "knn": KNN_CURVE_FIELDS}
HEADLINE_TABLE = "knn_linear"
HEADLINE_FIGURE = "knn_epochs.png"
HEADLINE_BEGIN = "<!-- headline:begin -->"
HEADLINE_END = "<!-- headline:end -->"


def curve_runs(runs: list[Run]) -> list[Run]:
    """The runs that have training curves: the main grid and its seeds (not the ablations,
    whose curves the sweep tables summarise, nor the random initialisation, which has no
    training)."""
    return [r for r in runs if not r.ablation and not r.is_random_init]


def _csv(fields: tuple[str, ...], records: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fields)
    for rec in records:
        writer.writerow(["" if rec.get(f) is None else rec[f] for f in fields])
    return buf.getvalue()


def write_curves(runs: list[Run], out_dir: Path) -> list[Path]:
    """``plots/{train,knn}/<run>.csv`` for every curve run, header only when it has no record
    of that type yet (the workflow declares the files, so each is always written)."""
    files = []
    chosen = curve_runs(runs)
    names = [r.name for r in chosen]
    for run in chosen:
        # a report over several experiments may hold two runs of one name
        stem = run.name if names.count(run.name) == 1 else run.rel.replace("/", "_")
        for kind, fields in CURVES.items():
            path = out_dir / "plots" / kind / f"{stem}.csv"
            records = [r for r in run.records if r.get("type") == kind]
            atomic_write_text(path, _csv(fields, records))
            files.append(path)
    return files


def row_label(table: Table, row) -> str:
    return " / ".join(row.keys[k] for k in table.key_columns if row.keys.get(k))


def metrics_summary(tables: list[Table]) -> dict:
    """{table: {row: {column: value}}} of this pipeline's rows (published rows are not
    results of ours); a spread over seeds is ``<column> ±``."""
    out: dict = {}
    for table in tables:
        rows: dict = {}
        for row in table.our_rows:
            values: dict = {}
            for column in table.columns:
                cell = row.cells.get(column.name)
                if cell is None or cell.missing:
                    continue
                values[column.name] = cell.value
                if cell.std is not None:
                    values[f"{column.name} ±"] = cell.std
            if values:
                rows[row_label(table, row)] = values
        if rows:
            out[table.name] = rows
    return out


def provenance_record(stamp: Stamp, runs: list[Run], tables: list[Table]) -> dict:
    """Who produced the results: the report's code and the code of every run, the machines
    that trained, the software, the date."""
    shas = sorted({r.git_sha for r in runs if r.git_sha})
    hosts = sorted({(r.done or {}).get("hostname", "") for r in runs} - {""})
    devices = sorted({(r.done or {}).get("device", "") for r in runs} - {""})
    return {
        "report_git_sha": stamp.report_sha,
        "report_git_dirty": stamp.report_dirty,
        "date": stamp.date,
        "runs_dir": stamp.runs_dir,
        "runs": len(runs),
        "runs_git_shas": shas,
        "machines": hosts,
        "devices": devices,
        "report_machine": {
            "hostname": platform.node(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "versions": versions(),
        "tables_with_results": [t.name for t in tables if t.has_results],
    }


def write_summary(out_dir: Path, tables: list[Table], runs: list[Run], stamp: Stamp) -> list[Path]:
    metrics = out_dir / "metrics.json"
    atomic_write_text(metrics, json.dumps(metrics_summary(tables), indent=1) + "\n")
    prov = out_dir / "provenance.json"
    atomic_write_text(prov, json.dumps(provenance_record(stamp, runs, tables), indent=1) + "\n")
    return [metrics, prov, *write_curves(runs, out_dir)]


def headline_block(tables: list[Table], stamp: Stamp, out_dir: Path, readme: Path) -> str:
    """The README's headline: the k-NN / linear-probe table with its reference rows (its
    Markdown file without the sources list), the k-NN-per-epoch figure, and where the rest
    is; links relative to the README."""
    table = next((t for t in tables if t.name == HEADLINE_TABLE), None)
    rel = Path(os.path.relpath(out_dir, readme.parent)).as_posix()
    lines = [HEADLINE_BEGIN]
    dirty = " (uncommitted changes)" if stamp.report_dirty else ""
    lines += [
        f"Generated by `folk report` from `{stamp.runs_dir}` at git "
        f"{stamp.report_sha[:12]}{dirty} on {stamp.date} (machine and software: "
        f"[`{rel}/provenance.json`]({rel}/provenance.json)).",
        "",
    ]
    if table is not None and table.has_results:
        md = to_markdown(table, stamp).split("\n**Sources**")[0].rstrip().splitlines()
        body = md[1:]  # its own "# title" becomes a bold line
        lines += [f"**{table.title}**", *body, ""]
        lines += [
            f"Sources of every cell: [`{rel}/tables/{table.name}.md`]"
            f"({rel}/tables/{table.name}.md).",
            "",
        ]
    else:
        lines += ["No k-NN or linear-probe result yet.", ""]
    lines += [
        f"![k-NN accuracy during pre-training]({rel}/figures/{HEADLINE_FIGURE})",
        "",
        f"Every table, figure and claim: [`{rel}/README.md`]({rel}/README.md).",
        HEADLINE_END,
    ]
    return "\n".join(lines)


_BLOCK = re.compile(re.escape(HEADLINE_BEGIN) + r".*?" + re.escape(HEADLINE_END), re.S)


def check_headline_target(readme: Path) -> str:
    """The README's text, if it has one headline block to replace; a README without the
    markers is an error (named before the report writes anything), not a file to append to."""
    try:
        text = readme.read_text()
    except OSError as exc:
        raise ConfigError(f"--readme {readme}: cannot read it ({exc.strerror})") from None
    if len(_BLOCK.findall(text)) != 1:
        raise ConfigError(
            f"--readme {readme}: needs exactly one headline block, the lines "
            f"{HEADLINE_BEGIN} and {HEADLINE_END}; found {len(_BLOCK.findall(text))}"
        )
    return text


def splice_headline(readme: Path, block: str) -> None:
    """Replace the README's headline block (between the two markers) by ``block``."""
    text = check_headline_target(readme)
    atomic_write_text(readme, _BLOCK.sub(lambda _: block, text, count=1))
