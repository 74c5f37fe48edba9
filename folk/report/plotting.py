"""Figure plumbing shared by every report figure: one fixed size and resolution, a "no
results" panel, and atomic PNG + PDF writes (without timestamps, so reruns are identical)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from folk.utils.io import atomic_write_bytes

FIG_SIZE_IN = (16.0, 9.0)
FIG_DPI = 100  # 1600 x 900 px
FIG_PIXELS = (int(FIG_SIZE_IN[0] * FIG_DPI), int(FIG_SIZE_IN[1] * FIG_DPI))


@dataclass
class FigureInfo:
    """What the README says about a figure."""

    name: str
    title: str
    description: str
    runs: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    has_data: bool = True
    note: str = ""
    files: list[str] = field(default_factory=list)


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs):
    import matplotlib  # noqa: PLC0415  matplotlib only when a figure is drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # noqa: PLC0415  after choosing the Agg backend

    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=FIG_SIZE_IN,
        dpi=FIG_DPI,
        squeeze=False,
        layout="constrained",
        **kwargs,
    )
    return fig, axes


def new_blank_figure():
    """A figure of the fixed size with no axes (for sub-figure layouts)."""
    import matplotlib  # noqa: PLC0415  matplotlib only when a figure is drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # noqa: PLC0415  after choosing the Agg backend

    return plt.figure(figsize=FIG_SIZE_IN, dpi=FIG_DPI, layout="constrained")


def no_results(ax, message: str) -> None:
    ax.set_axis_off()
    ax.text(
        0.5,
        0.5,
        f"No results\n{message}",
        ha="center",
        va="center",
        fontsize=16,
        color="0.35",
        wrap=True,
        transform=ax.transAxes,
    )


def save_figure(fig, out_dir: Path, name: str) -> list[Path]:
    """``<out_dir>/<name>.png`` and ``.pdf`` at exactly FIG_PIXELS."""
    import matplotlib.pyplot as plt  # noqa: PLC0415  matplotlib only when a figure is drawn

    paths = []
    for fmt, meta in (
        ("png", {"Software": None}),
        ("pdf", {"CreationDate": None, "ModDate": None, "Producer": None}),
    ):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=FIG_DPI, metadata=meta)
        # the layout is settled by the first save: keep it rather than solve it again
        fig.set_layout_engine("none")
        path = Path(out_dir) / f"{name}.{fmt}"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths
