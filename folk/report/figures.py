"""Figures drawn from run results: Fig. 5 (reconstruction loss of ``mfm`` against
``mfm_comrcom``), k-NN accuracy over pre-training epochs, the collapse diagnostics of the
self-distillation (teacher entropy and KL), and bench throughput. A figure
whose data is missing is still written, with a "no results" panel, so the set of files is
the same on every run of the report."""

from __future__ import annotations

import functools
import math
from pathlib import Path

from folk.report.collect import BenchRecord, Run
from folk.report.naming import backbone_label, variant_rank
from folk.report.plotting import FigureInfo, new_figure, no_results, save_figure

FIG5_VARIANTS = ("mfm", "mfm_comrcom")


def _series_label(run: Run) -> str:
    return f"{run.dataset}, {run.backbone}, {run.epochs} ep ({run.experiment})"


def _themed(draw):
    """Run ``draw`` under seaborn's style in a local rc context (no global side effects, so
    the figures look the same whatever ran before)."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        import matplotlib  # noqa: PLC0415  matplotlib only when a figure is drawn
        import seaborn as sns  # noqa: PLC0415  seaborn only when a figure is drawn

        matplotlib.use("Agg", force=True)
        with matplotlib.rc_context():
            sns.set_theme(style="whitegrid", context="talk", font_scale=0.8)
            return draw(*args, **kwargs)

    return wrapper


@_themed
def figure_reconstruction_loss(runs: list[Run], out_dir: Path) -> FigureInfo:
    """Fig. 5: ``loss_rec`` of the main-grid ``mfm`` and ``mfm_comrcom`` runs, per logged
    iteration (train records) and per epoch (epoch means)."""
    import pandas as pd  # noqa: PLC0415  pandas only when a figure is drawn
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415  as matplotlib

    import seaborn as sns  # noqa: PLC0415  seaborn only when a figure is drawn

    members = [
        r for r in runs if not r.ablation and not r.is_random_init and r.variant in FIG5_VARIANTS
    ]
    steps, epochs, used = [], [], []
    for run in sorted(members, key=lambda r: (variant_rank(r.variant), r.rel)):
        n0 = len(steps) + len(epochs)
        for rec in run.records:
            if rec.get("loss_rec") is None:
                continue
            row = {
                "variant": run.variant,
                "setting": _series_label(run),
                "loss_rec": rec["loss_rec"],
            }
            if rec.get("type") == "train":
                steps.append({**row, "iteration": rec["iteration"]})
            elif rec.get("type") == "epoch":
                epochs.append({**row, "epoch": rec["epoch"]})
        if len(steps) + len(epochs) > n0:
            used.append(run)
    fig, axes = new_figure(1, 2)
    for ax, data, x, title in (
        (axes[0, 0], steps, "iteration", "per logged iteration"),
        (axes[0, 1], epochs, "epoch", "epoch mean"),
    ):
        if not data:
            no_results(
                ax,
                f"no {'train' if x == 'iteration' else 'epoch'} records with loss_rec\n"
                f"in metrics.jsonl of runs of variant {' / '.join(FIG5_VARIANTS)}",
            )
            continue
        df = pd.DataFrame(data)
        sns.lineplot(
            data=df,
            x=x,
            y="loss_rec",
            hue="variant",
            style="setting",
            hue_order=[v for v in FIG5_VARIANTS if v in set(df["variant"])],
            marker="o" if x == "epoch" else None,
            ax=ax,
        )
        ax.set_title(f"reconstruction loss, {title}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("frequency reconstruction loss (loss_rec)")
        ax.legend(fontsize=9)
    fig.suptitle("Fig. 5: reconstruction loss during pre-training, MFM against MFM + Com/RCom")
    files = save_figure(fig, out_dir, "fig5_reconstruction_loss")
    return FigureInfo(
        name="fig5_reconstruction_loss",
        title="Fig. 5: reconstruction loss of mfm against mfm_comrcom",
        description="Frequency reconstruction loss (`loss_rec` of metrics.jsonl) over "
        "pre-training for the main-grid `mfm` (MFM's fixed filters) and "
        "`mfm_comrcom` (MFM with Com/RCom) runs: left per logged iteration, right "
        "the epoch means.",
        runs=[r.rel for r in used],
        datasets=sorted({r.dataset for r in used}),
        has_data=bool(used),
        note="" if used else "no loss_rec records yet",
        files=[p.name for p in files],
    )


@_themed
def figure_knn_epochs(runs: list[Run], out_dir: Path) -> FigureInfo:
    """k-NN top-1 of the monitoring records (type "knn") against the pre-training epoch."""
    import pandas as pd  # noqa: PLC0415  pandas only when a figure is drawn
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415  as matplotlib

    import seaborn as sns  # noqa: PLC0415  seaborn only when a figure is drawn

    data, used = [], []
    for run in sorted(
        (r for r in runs if not r.ablation and not r.is_random_init),
        key=lambda r: (variant_rank(r.variant), r.rel),
    ):
        recs = [r for r in run.records if r.get("type") == "knn" and r.get("knn_top1") is not None]
        if recs:
            used.append(run)
        data += [
            {
                "variant": run.variant,
                "setting": _series_label(run),
                "epoch": r["epoch"],
                "knn_top1": r["knn_top1"],
            }
            for r in recs
        ]
    fig, axes = new_figure(1, 1)
    ax = axes[0, 0]
    if data:
        df = pd.DataFrame(data)
        order = sorted(set(df["variant"]), key=variant_rank)
        sns.lineplot(
            data=df,
            x="epoch",
            y="knn_top1",
            hue="variant",
            hue_order=order,
            style="setting",
            marker="o",
            ax=ax,
        )
        ax.set_ylabel("k-NN top-1 (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("pre-training epoch (0: the random initialisation)")
        ax.legend(fontsize=9)
    else:
        no_results(
            ax,
            'no k-NN monitoring records (type "knn") in any run\'s metrics.jsonl;\n'
            "set pretrain.knn_every > 0 to record them",
        )
    ax.set_title("k-NN accuracy during pre-training, per variant")
    files = save_figure(fig, out_dir, "knn_epochs")
    return FigureInfo(
        name="knn_epochs",
        title="k-NN accuracy over pre-training epochs",
        description="Weighted k-NN top-1 (%) measured during pre-training every "
        '`pretrain.knn_every` epochs (records of type "knn" in metrics.jsonl, on '
        "`pretrain.knn_train_images`/`knn_test_images` images), one line per "
        "main-grid variant; epoch 0 is the initialisation, the baseline a trained "
        "backbone has to beat.",
        runs=[r.rel for r in used],
        datasets=sorted({r.dataset for r in used}),
        has_data=bool(used),
        note="" if used else "no k-NN monitoring records yet",
        files=[p.name for p in files],
    )


# the distillation diagnostics of the train records (folk.engine.step: kd_<name> of
# DistillationLoss.diagnostics): column, panel title, y label
DIAGNOSTICS = (
    ("kd_teacher_entropy", "teacher entropy H(P_t)", "entropy (nats)"),
    ("kd_kl", "KL(P_t || P_s)", "KL (nats)"),
)


@_themed
def figure_teacher_diagnostics(runs: list[Run], out_dir: Path) -> FigureInfo:
    """Teacher entropy and teacher-student KL of the train records, per logged iteration,
    one line per main-grid variant with distillation; the entropy panel marks log K."""
    import pandas as pd  # noqa: PLC0415  pandas only when a figure is drawn

    import seaborn as sns  # noqa: PLC0415  seaborn only when a figure is drawn

    data, used, out_dims = [], [], set()
    for run in sorted(
        (r for r in runs if not r.ablation and not r.is_random_init),
        key=lambda r: (variant_rank(r.variant), r.rel),
    ):
        recs = [
            r
            for r in run.records
            if r.get("type") == "train" and any(r.get(c) is not None for c, _, _ in DIAGNOSTICS)
        ]
        if not recs:
            continue
        used.append(run)
        out_dims.add(int(run.cfg["model"]["head_out_dim"]))
        for rec in recs:
            data += [
                {
                    "variant": run.variant,
                    "setting": _series_label(run),
                    "iteration": rec["iteration"],
                    "quantity": column,
                    "value": rec[column],
                }
                for column, _, _ in DIAGNOSTICS
                if rec.get(column) is not None
            ]
    fig, axes = new_figure(1, len(DIAGNOSTICS))
    df = pd.DataFrame(data)
    for ax, (column, title, y_label) in zip(axes[0], DIAGNOSTICS):
        part = df[df["quantity"] == column] if data else df
        if part.empty:
            no_results(
                ax,
                f"no train records with {column} in metrics.jsonl\n"
                "of main-grid runs with self-distillation",
            )
            continue
        sns.lineplot(
            data=part,
            x="iteration",
            y="value",
            hue="variant",
            hue_order=sorted(set(part["variant"]), key=variant_rank),
            style="setting",
            ax=ax,
        )
        if column == "kd_teacher_entropy":
            # the entropy of a uniform teacher: a run that stays there has collapsed
            for k in sorted(out_dims):
                ax.axhline(math.log(k), color="0.4", linestyle="--", linewidth=1)
                ax.annotate(
                    f"log K = log {k}",
                    (0, math.log(k)),
                    xycoords=("axes fraction", "data"),
                    xytext=(4, -12),
                    textcoords="offset points",
                    fontsize=9,
                    color="0.3",
                )
        ax.set_title(title)
        ax.set_ylabel(y_label)
        ax.legend(fontsize=9)
    fig.suptitle(
        "Collapse diagnostics of the self-distillation: teacher entropy and teacher-student KL"
    )
    files = save_figure(fig, out_dir, "teacher_diagnostics")
    return FigureInfo(
        name="teacher_diagnostics",
        title="Collapse diagnostics: teacher entropy and KL",
        description="Entropy of the teacher's distribution over the K prototypes "
        "(`kd_teacher_entropy` of the train records in metrics.jsonl) and the KL divergence "
        "from teacher to student (`kd_kl`; their sum is the cross-entropy the student minimises), per logged "
        "iteration, one line per main-grid variant with self-distillation. An entropy that "
        "stays near log K (dashed) with a KL near 0 is the uniform collapse, an entropy near "
        "0 the one-prototype collapse; a healthy run sits in between with a falling KL.",
        runs=[r.rel for r in used],
        datasets=sorted({r.dataset for r in used}),
        has_data=bool(used),
        note="" if used else "no distillation diagnostics yet",
        files=[p.name for p in files],
    )


# `folk bench --data` bars, beside the step's: (label, measure, pipeline, field)
INPUT_BARS = (
    ("input: ours, 1 core", "loader", "pretrain_views", "per_core"),
    ("input: DINO's, 1 core", "loader", "dino_reference", "per_core"),
    ("input: ours, {workers} workers", "summary", None, "loader_images_per_s"),
    ("input + step", "whole", None, "images_per_s"),
)


def _panel(r: dict) -> str:
    return f"{r['device']}, {r.get('dtype', '?')}" + (", compiled" if r.get("compile") else "")


def _input_rows(bench: list[BenchRecord]) -> list[dict]:
    """The loader, its DINO reference, the workers' capacity and the whole path of every
    ``folk bench --data`` run, as bars in the throughput panels."""
    rows = []
    for b in bench:
        r = b.record
        if r.get("type") != "bench_data":
            continue
        for rank, (label, measure, pipeline, field) in enumerate(INPUT_BARS):
            if r["measure"] == measure and (pipeline is None or r.get("pipeline") == pipeline):
                if isinstance(r.get(field), (int, float)):
                    rows.append(
                        {
                            "variant": label.format(workers=r.get("num_workers", "?")),
                            "backbone": backbone_label(
                                r["arch"], r.get("patch_size"), r.get("img_size")
                            ),
                            "device": _panel(r),
                            "images_per_s": float(r[field]),
                            "rank": rank,
                        }
                    )
    return rows


@_themed
def figure_throughput(bench: list[BenchRecord], out_dir: Path) -> FigureInfo:
    """Images/s per variant and backbone from ``folk bench``, one panel per device; beside
    them, from ``folk bench --data``, the loader on one core (ours and DINO's reference),
    the loader with the run's workers, and loader and step together."""
    import pandas as pd  # noqa: PLC0415  pandas only when a figure is drawn

    import seaborn as sns  # noqa: PLC0415  seaborn only when a figure is drawn

    rows = []
    for b in bench:
        r = b.record
        if r.get("type", "bench") != "bench":
            continue
        rows.append(
            {
                "variant": r["variant"] + (" (baseline)" if r.get("baseline") else ""),
                "backbone": backbone_label(r["arch"], r.get("patch_size"), r.get("img_size")),
                "device": _panel(r),
                "images_per_s": float(r["images_per_s"]),
            }
        )
    inputs = _input_rows(bench)
    rows += inputs
    devices = sorted({r["device"] for r in rows})[:4]
    fig, axes = new_figure(1, max(1, len(devices)))
    if not rows:
        no_results(
            axes[0, 0],
            "no bench.jsonl under the runs directory\n"
            "(`folk bench ... --out runs/<experiment>/bench.jsonl`)",
        )
    input_rank = {r["variant"]: r["rank"] for r in inputs}
    for ax, device in zip(axes[0], devices):
        df = pd.DataFrame([r for r in rows if r["device"] == device])
        names = set(df["variant"])
        # the step's bars first, in the variants' order, then the input path's
        order = sorted(
            names - set(input_rank), key=lambda v: variant_rank(v.split(" ")[0])
        ) + sorted(names & set(input_rank), key=lambda v: (input_rank[v], v))
        sns.barplot(
            data=df,
            x="variant",
            y="images_per_s",
            hue="backbone",
            order=order,
            errorbar=None,
            ax=ax,
        )
        ax.set_title(device, fontsize=11)
        ax.set_ylabel("images/s (source images)")
        ax.tick_params(axis="x", labelrotation=30, labelsize=9)
        for container in ax.containers:
            ax.bar_label(container, fmt="%.0f", fontsize=8)
    fig.suptitle(
        "Pre-training throughput: the step per variant and backbone (folk bench), "
        "the input path (folk bench --data)"
    )
    files = save_figure(fig, out_dir, "throughput")
    note = ""
    if len({r["device"] for r in rows}) > 4:
        note = "more than four devices: only the first four are drawn"
    datasets = ["random tensors (no data loading)"] if len(rows) > len(inputs) else []
    datasets += sorted(
        {
            f"{b.record['dataset']} ({b.record.get('data_root', '?')})"
            for b in bench
            if b.record.get("type") == "bench_data" and "dataset" in b.record
        }
    )
    return FigureInfo(
        name="throughput",
        title="Throughput per variant and backbone",
        description="Images per second of one pre-training step (`folk bench`, records of type "
        '"bench"), per variant and backbone, with the plain two-view DINO step '
        "measured in the same run as the baseline; one panel per device and dtype. "
        'The "input" bars (`folk bench --data`, records of type "bench_data") '
        "are the loader on the experiment's data: our pre-training views and "
        "DINO's reference augmentation on one core, our loader with the run's "
        "`data.num_workers` workers (one core's rate times the workers), and the "
        'loader feeding the step ("input + step"), which the slower of the '
        "two bounds.",
        runs=sorted({b.path for b in bench}),
        datasets=datasets,
        has_data=bool(rows),
        note=note or ("" if rows else "no bench results yet"),
        files=[p.name for p in files],
    )
