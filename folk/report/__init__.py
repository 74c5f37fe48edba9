"""``folk report``: the paper's tables and figures rebuilt from the pipeline's runs.

``build_report(runs_dir, out_dir)`` collects run directories (``config.yaml``, ``metrics.jsonl``,
``DONE.json``, ``eval/*/metrics.json``) and bench results under ``runs_dir``, and writes
``tables/<name>.{md,tex,csv}``, ``figures/<name>.{png,pdf}`` and ``README.md`` under
``out_dir``. docs/pipeline.md, "Tables and figures", is the user guide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from folk.config import defaults, scaled_patch
from folk.errors import ConfigError
from folk.report.claims import check_claims
from folk.report.collect import collect_bench, collect_runs, load_reference
from folk.report.figures import figure_knn_epochs, figure_reconstruction_loss, figure_throughput
from folk.report.readme import FORMATS, render_readme
from folk.report.seeds import merge_seeds
from folk.report.tables import build_tables
from folk.report.writers import Stamp, to_csv, to_latex, to_markdown
from folk.utils.io import atomic_write_text
from folk.utils.provenance import git_sha, now_iso


@dataclass
class Report:
    tables: list  # folk.report.table.Table
    figures: list  # folk.report.plotting.FigureInfo
    files: list[Path]


def build_report(
    runs_dir: str | Path,
    out_dir: str | Path,
    ref_path: str | Path | None = None,
    q: float = 0.05,
    radius: float = 16,
    seed: int = 0,
    photo_size: int = 224,
) -> Report:
    _check_parameters(q, radius, photo_size)
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    # read and validate everything before writing anything
    ref = load_reference(ref_path)
    runs = collect_runs(runs_dir)
    bench = collect_bench(runs_dir)
    cfg = defaults()

    sha, dirty = git_sha()
    stamp = Stamp(report_sha=sha, report_dirty=dirty, date=now_iso(), runs_dir=str(runs_dir))
    files: list[Path] = []
    tables = build_tables(runs, ref, cfg)
    writers = {"md": to_markdown, "tex": to_latex, "csv": to_csv}
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
        figure_throughput(bench, fig_dir),
    ]
    files += [fig_dir / n for fig in figures for n in fig.files]
    readme = out_dir / "README.md"
    atomic_write_text(
        readme,
        render_readme(
            tables, figures, stamp, str(out_dir), len(runs), check_claims(merge_seeds(runs))
        ),
    )
    files.append(readme)
    return Report(tables=tables, figures=figures, files=files)


def _check_parameters(q: float, radius: float, size: int) -> None:
    if not 0 < q < 1:
        raise ConfigError(f"--q: the Com/RCom portion must be in (0, 1), got {q}")
    if size < 8:
        raise ConfigError(f"--photo-size: must be at least 8 px, got {size}")
    if not 0 < radius < size / 2:
        raise ConfigError(f"--radius: must be in (0, {size / 2}) at {size} px, got {radius}")
