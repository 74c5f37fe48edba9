"""``folk report``: the paper's tables and figures rebuilt from the pipeline's runs.

``build_report(runs_dir, out_dir)`` collects the run directories of one experiment
(``config.yaml``, ``metrics.jsonl``, ``DONE.json``, ``eval/*/metrics.json``) and bench results
under ``runs_dir``, and writes ``tables/<name>.{md,tex,csv,html}``,
``figures/<name>.{png,pdf}``, ``README.md``, ``runs.html`` (folk.report.runs_page),
``metrics.json``, ``provenance.json`` and ``plots/{train,knn}/<run>.csv`` (folk.report.summary)
under ``out_dir`` (default ``results/<experiment.name>``); with ``readme``, the headline block
of that README too; ``runs/`` holds the configs and logs behind the cells
(folk.report.sources). docs/pipeline.md, "Tables and figures", is the user guide.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from folk.config import defaults, scaled_patch
from folk.errors import ConfigError
from folk.report.claims import check_claims
from folk.report.collect import collect_bench, collect_runs, load_reference
from folk.report.figures import (
    figure_knn_epochs,
    figure_reconstruction_loss,
    figure_teacher_diagnostics,
    figure_throughput,
)
from folk.report.readme import FORMATS, render_readme
from folk.report.runs_page import runs_html
from folk.report.seeds import merge_seeds
from folk.report.sources import copy_sources
from folk.report.summary import (
    check_headline_target,
    headline_block,
    splice_headline,
    write_summary,
)
from folk.report.tables import build_tables
from folk.report.writers import Stamp, to_csv, to_html, to_latex, to_markdown
from folk.utils.io import atomic_write_text
from folk.utils.provenance import git_sha, now_iso

# what the pipeline writes into the repository: changes there do not make the code "dirty"
GENERATED_PATHS = ("results", "dvc.lock", "README.md")


@dataclass
class Report:
    tables: list  # folk.report.table.Table
    figures: list  # folk.report.plotting.FigureInfo
    files: list[Path]
    out_dir: Path


def build_report(
    runs_dir: str | Path,
    out_dir: str | Path | None = None,
    ref_path: str | Path | None = None,
    q: float = 0.05,
    radius: float = 16,
    seed: int = 0,
    photo_size: int = 224,
    readme: str | Path | None = None,
) -> Report:
    _check_parameters(q, radius, photo_size)
    runs_dir = Path(runs_dir)
    # read and validate everything before writing anything
    if readme is not None:
        readme = Path(readme)
        check_headline_target(readme)
    ref = load_reference(ref_path)
    runs = collect_runs(runs_dir)
    out_dir = Path(out_dir) if out_dir is not None else _default_out_dir(runs, runs_dir)
    bench = collect_bench(runs_dir)
    cfg = defaults()

    sha, dirty = git_sha(ignore=GENERATED_PATHS)
    stamp = Stamp(report_sha=sha, report_dirty=dirty, date=now_iso(), runs_dir=str(runs_dir))
    files: list[Path] = []
    tables = build_tables(runs, ref, cfg)
    copied = copy_sources(runs, out_dir)
    files += copied
    linked = frozenset(p.relative_to(out_dir).as_posix() for p in copied)
    writers = {
        "md": partial(to_markdown, links=linked),
        "tex": to_latex,
        "csv": to_csv,
        "html": to_html,
    }
    for table in tables:
        for ext in FORMATS:
            path = out_dir / "tables" / f"{table.name}.{ext}"
            atomic_write_text(path, writers[ext](table, stamp))
            files.append(path)

    # torch and skimage for these two figures only: what reads results stays torch-free
    from folk.report.filter_figures import figure_filters, figure_masking  # noqa: PLC0415

    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    f = cfg["filter"]
    patch = scaled_patch(cfg, photo_size)
    figures = [
        figure_filters(fig_dir, q=q, radius=radius, size=photo_size, seed=seed),
        figure_masking(
            fig_dir,
            q=q,
            rho=f["random_rho"],
            patch_ratio=f["patch_mask_ratio"],
            patch_size=patch,
            size=photo_size,
            seed=seed,
        ),
        figure_reconstruction_loss(runs, fig_dir),
        figure_knn_epochs(runs, fig_dir),
        figure_teacher_diagnostics(runs, fig_dir),
        figure_throughput(bench, fig_dir),
    ]
    files += [fig_dir / n for fig in figures for n in fig.files]
    readme_path = out_dir / "README.md"
    atomic_write_text(
        readme_path,
        render_readme(
            tables, figures, stamp, str(out_dir), len(runs), check_claims(merge_seeds(runs))
        ),
    )
    files.append(readme_path)
    runs_path = out_dir / "runs.html"
    atomic_write_text(runs_path, runs_html(runs, tables, stamp))
    files.append(runs_path)
    files += write_summary(out_dir, tables, runs, stamp)
    if readme is not None:
        splice_headline(readme, headline_block(tables, stamp, out_dir, readme))
        files.append(readme)
    return Report(tables=tables, figures=figures, files=files, out_dir=out_dir)


def _default_out_dir(runs: list, runs_dir: Path) -> Path:
    """results/<experiment.name>: one experiment's results in one place. Runs of several
    experiments (a demo and a paper run, say) make one report only where the user names it."""
    names = sorted({r.experiment for r in runs})
    if len(names) > 1:
        raise ConfigError(
            f"--runs {runs_dir}: holds runs of {len(names)} experiments ({', '.join(names)}); "
            f"give one experiment's directory (e.g. --runs {runs_dir / names[0]}), or --out "
            "for a report of them all"
        )
    return Path("results") / (names[0] if names else runs_dir.name)


def _check_parameters(q: float, radius: float, size: int) -> None:
    if not 0 < q < 1:
        raise ConfigError(f"--q: the Com/RCom portion must be in (0, 1), got {q}")
    if size < 8:
        raise ConfigError(f"--photo-size: must be at least 8 px, got {size}")
    if not 0 < radius < size / 2:
        raise ConfigError(f"--radius: must be in (0, {size / 2}) at {size} px, got {radius}")
