"""Build every report table from collected runs and the published reference numbers.

Which runs feed which table is decided from each run's configuration only:
``experiment.ablation`` empty means the main grid of variants; otherwise the run belongs to
that ablation, and the value it varies is read from its config (never from its name).
"""
from __future__ import annotations

import re
from typing import Callable, Iterable

from folk.config import flatten
from folk.recipes import is_resnet
from folk.report.collect import (MAJORITY, RANDOM_INIT, RAW_PIXELS, REFERENCE_METHODS,
                                 EvalResult, Run)
from folk.report.naming import dataset_label, fmt_number, fmt_value, variant_rank
from folk.report.seeds import merge_seeds
from folk.report.table import BELOW_MARK, OURS, PUBLISHED, Cell, Column, Row, Table

KNN, LINEAR, FINETUNE = "k-NN top-1", "linear top-1", "fine-tune top-1"
ABLATION_COLUMNS = [Column(KNN), Column(LINEAR), Column(FINETUNE)]
_TASK_COLUMN = {"knn": KNN, "linear": LINEAR, "finetune": FINETUNE}


# ---------------------------------------------------------------- helpers

def _main_grid(runs: Iterable[Run]) -> list[Run]:
    return [r for r in runs if not r.ablation]


def _sort_runs(runs: Iterable[Run]) -> list[Run]:
    return sorted(runs, key=lambda r: (r.dataset, r.backbone, variant_rank(r.variant), r.epochs,
                                       r.rel))


def _eval_cell(run: Run, ev: EvalResult | None, value: float | None = None,
               std: float | None = None, metric: str | None = None) -> Cell:
    """A cell read from ``ev`` (its primary metric unless ``value`` is given)."""
    if ev is None:
        return Cell()
    if value is None and metric is None:
        value, std = ev.primary()
    elif std is None and metric is not None and "seed_std" in ev.record:
        std = ev.spread(metric)
    task = ev.task + (f"-{ev.variant}" if ev.variant else "")
    detail = f"run {run.rel}, task {task} ({metric or ev.record['primary']}"
    detail += f", {ev.record['epochs']} epochs)" if ev.record.get("epochs") else ")"
    if ev.record.get("seeds"):  # merged over the seeds that have this evaluation
        detail += (f", mean ± standard deviation over pre-training seeds "
                   f"{', '.join(map(str, ev.record['seeds']))}")
    elif run.seeds:
        detail += f", pre-training seed {ev.record.get('seed')} only"
    if ev.dataset and dataset_label(ev.dataset) not in (run.dataset, run.dataset.split(" (")[0]):
        detail += f", evaluated on {dataset_label(ev.dataset)}"
    return Cell(value=value, std=std, source=ev.rel, detail=detail,
                finished_at=str(ev.record.get("finished_at", "")))


def _attach(row: Row, run: Run, evals: Iterable[EvalResult | None] = ()) -> Row:
    notes = [f"{run.experiment}: {n}" for n in run.notes()]
    row.add_run(run.rel, notes, run.git_sha)
    for ev in evals:
        if ev is not None and ev.record.get("git_sha") and ev.record["git_sha"] not in row.git_shas:
            row.git_shas.append(ev.record["git_sha"])
    return row


def _find_row(rows: list[Row], keys: dict, origin: str) -> Row:
    for r in rows:
        if r.origin == origin and r.keys == keys:
            return r
    row = Row(keys=dict(keys), origin=origin)
    rows.append(row)
    return row


def _place(table: Table, row: Row, column: str, cell: Cell) -> None:
    displaced = row.put(column, cell)
    if displaced is not None and displaced.source:
        table.notes.append(f"{column} of {row.keys.get('method')}: newer result shown; also "
                           f"found {displaced.source}")


def _published(ref, task: str, metrics: Iterable[str] | None = None, arch: Callable | None = None):
    df = ref[ref["task"] == task]
    if metrics is not None:
        df = df[df["metric"].isin(list(metrics))]
    if arch is not None:
        df = df[df["arch"].map(arch)]
    return df


def _published_row(rows: list[Row], keys: dict, ref_row) -> Row:
    row = _find_row(rows, keys, PUBLISHED)
    note = f"{ref_row['source']} ({ref_row['pretrain_dataset']}, {ref_row['eval_detail']}"
    note += f"; {ref_row['note']})" if ref_row["note"] else ")"
    if note not in row.notes:
        row.notes.append(note)
    return row


def _pub_cell(ref_row) -> Cell:
    return Cell(value=float(ref_row["value"]), source="", detail=ref_row["source"])


def _backbone_order(label: str) -> tuple:
    order = "TSBLHg"
    m = re.match(r"ViT-(\w)/(\d+)", label)
    if m:
        return (0, order.index(m.group(1)) if m.group(1) in order else 9, label)
    return (1, 0, label)


def _protocol_column(table: Table, rows_with_variant: bool, after: str) -> None:
    if rows_with_variant:
        table.add_key_column("eval protocol", after=after)


def _mark_below_random_init(table: Table) -> None:
    """Flag every result of a trained backbone that is not above the random initialisation
    of the same backbone on the same data (the ``random init`` row whose other key columns
    are equal), in the same column; the table says so in a note."""
    ignored = ("method", "pre-train epochs")
    inits = [r for r in table.our_rows if r.keys.get("method") == RANDOM_INIT]
    flagged = 0
    for init in inits:
        same = {k: v for k, v in init.keys.items() if k not in ignored}
        for row in table.our_rows:
            if row.keys.get("method") in REFERENCE_METHODS or \
                    any(row.keys.get(k) != v for k, v in same.items()):
                continue
            for column, cell in row.cells.items():
                ref = init.cells.get(column)
                if not cell.missing and ref is not None and not ref.missing \
                        and cell.value <= ref.value:
                    cell.below_reference = True
                    flagged += 1
    if inits:
        table.notes.append(
            "Reference rows, computed by this pipeline on the same data and split with the same "
            "protocol: 'random init' is the same backbone at its seed's initialisation "
            "(pre-training with 0 epochs; fine-tuned, it is the network trained from scratch "
            "with the same recipe and budget), 'raw pixels' the flattened images, 'majority "
            "class' a constant prediction of the most frequent training class.")
    if flagged:
        table.notes.append(f"{BELOW_MARK} after a value: {flagged} result(s) of a pre-trained "
                           "backbone that do not beat the random initialisation of the same "
                           "backbone ('random init' row) in the same column.")


def _finalise(table: Table, higher_is_better: bool = True) -> Table:
    """Published rows first (as the paper lists baselines first), each key column filled;
    results not above the random initialisation marked where higher is better."""
    if higher_is_better:
        _mark_below_random_init(table)
    table.rows.sort(key=lambda r: 0 if r.origin == PUBLISHED else 1)
    labels = [r.keys.get("backbone") or "" for r in table.rows] + [c.name for c in table.columns]
    if any("*" in b for b in labels):
        table.notes.append("Backbone* = the architecture with model.depth, embed_dim or "
                           "num_heads changed (a reduced model); @Npx = trained at N px.")
    for r in table.rows:
        for k in table.key_columns:
            r.keys.setdefault(k, None)
    return table


# ---------------------------------------------------------------- main results

def finetune_table(runs: list[Run], ref) -> Table:
    """Fine-tuning top-1 by method (rows) and backbone (columns), as in the paper's Table 1."""
    vit_runs = [r for r in _sort_runs(_main_grid(runs)) if not r.is_resnet]
    pub = _published(ref, "finetune", ["top1"], arch=lambda a: not is_resnet(a))
    backbones = {"ViT-S/16", "ViT-B/16"} | {r.backbone for r in vit_runs} | set(pub["backbone"])
    table = Table(
        name="finetune", title="Image classification: fine-tuning top-1 accuracy",
        description="Top-1 accuracy (%) after end-to-end fine-tuning of each pre-trained "
                    "backbone (primary metric `top1` of `eval/finetune`), one column per "
                    "backbone, one row per method, pre-training dataset and epochs.",
        key_columns=["method", "dataset", "pre-train epochs"],
        columns=[Column(b) for b in sorted(backbones, key=_backbone_order)],
        empty_note="No fine-tuning results yet (no run has eval/finetune/metrics.json).")
    for _, p in pub.iterrows():
        keys = {"method": p["method"], "dataset": p["pretrain_dataset"],
                "pre-train epochs": p["pretrain_epochs"] or None}
        _published_row(table.rows, keys, p).cells[p["backbone"]] = _pub_cell(p)
    any_variant = False
    for run in vit_runs:
        evs = [e for e in run.evals if e.task == "finetune"] or [None]
        for ev in evs:
            keys = {"method": run.method, "dataset": run.dataset,
                    "pre-train epochs": str(run.epochs)}
            if ev is not None and ev.variant:
                keys["eval protocol"], any_variant = ev.variant, True
            row = _attach(_find_row(table.rows, keys, OURS), run, [ev])
            _place(table, row, run.backbone, _eval_cell(run, ev))
    _protocol_column(table, any_variant, after="pre-train epochs")
    return _finalise(table)


def resnet_table(runs: list[Run], ref) -> Table:
    res_runs = [r for r in _sort_runs(_main_grid(runs)) if r.is_resnet]
    table = Table(
        name="resnet50", title="ResNet backbones: fine-tuning, linear probe and k-NN top-1",
        description="Each ResNet backbone (the paper's ResNet-50; the demo's ResNet-18) "
                    "pre-trained with each method: top-1 accuracy (%) "
                    "after fine-tuning (`eval/finetune`), of a linear probe (`eval/linear`) "
                    "and of a weighted k-NN classifier (`eval/knn`).",
        key_columns=["method", "backbone", "dataset", "pre-train epochs", "fine-tune epochs"],
        columns=[Column(FINETUNE), Column(LINEAR), Column(KNN)],
        empty_note="No ResNet runs yet.")
    for _, p in _published(ref, "finetune", ["top1"], arch=is_resnet).iterrows():
        keys = {"method": p["method"], "backbone": p["backbone"], "dataset": p["pretrain_dataset"],
                "pre-train epochs": p["pretrain_epochs"] or None,
                "fine-tune epochs": p["eval_epochs"] or None}
        _published_row(table.rows, keys, p).cells[FINETUNE] = _pub_cell(p)
    for run in res_runs:
        ft = run.eval("finetune", None)
        keys = {"method": run.method, "backbone": run.backbone, "dataset": run.dataset,
                "pre-train epochs": str(run.epochs),
                "fine-tune epochs": str(ft.record["epochs"]) if ft and ft.record.get("epochs") else None}
        evs = {FINETUNE: ft, LINEAR: run.eval("linear", None), KNN: run.eval("knn", None)}
        row = _attach(_find_row(table.rows, keys, OURS), run, evs.values())
        for col, ev in evs.items():
            _place(table, row, col, _eval_cell(run, ev))
    return _finalise(table)


def knn_linear_table(runs: list[Run], ref) -> Table:
    table = Table(
        name="knn_linear", title="Frozen features: k-NN and linear probe top-1",
        description="Top-1 accuracy (%) of a weighted k-NN classifier (`eval/knn`, primary "
                    "`top1_k20`) and of a linear probe (`eval/linear`, `top1`) on the frozen "
                    "teacher backbone.",
        key_columns=["method", "backbone", "dataset", "pre-train epochs"],
        columns=[Column(KNN), Column(LINEAR)],
        empty_note="No k-NN or linear-probe results yet.")
    pub = ref[ref["task"].isin(["knn", "linear"])]
    for _, p in pub.iterrows():
        keys = {"method": p["method"], "backbone": p["backbone"], "dataset": p["pretrain_dataset"],
                "pre-train epochs": p["pretrain_epochs"] or None}
        _published_row(table.rows, keys, p).cells[_TASK_COLUMN[p["task"]]] = _pub_cell(p)
    for run in _sort_runs(_main_grid(runs)):
        keys = {"method": run.method, "backbone": run.backbone, "dataset": run.dataset,
                "pre-train epochs": str(run.epochs)}
        evs = {KNN: run.eval("knn", None), LINEAR: run.eval("linear", None)}
        row = _attach(_find_row(table.rows, keys, OURS), run, evs.values())
        for col, ev in evs.items():
            _place(table, row, col, _eval_cell(run, ev))
        pixels = run.eval("pixels", None)
        if pixels is not None:  # the same two protocols on the flattened images
            img = run.cfg["model"]["img_size"]
            keys = {"method": RAW_PIXELS, "backbone": f"none ({img}x{img} px)",
                    "dataset": run.dataset, "pre-train epochs": None}
            row = _attach(_find_row(table.rows, keys, OURS), run, [pixels])
            _place(table, row, KNN, _eval_cell(run, pixels))
            _place(table, row, LINEAR, _eval_cell(run, pixels, value=pixels.metric("linear_top1"),
                                                  metric="linear_top1"))
    return _finalise(table)


# few-shot metric names (folk.evals.fewshot: "frac1pct_top1", "shot5_top1", "file_top1",
# "file_logreg_top1", each as "_mean"/"_std" over seeds); a few other spellings are accepted
# ("fraction0.01", "10pct", "5shot") so a renamed metric does not silently vanish
_FRACTION = re.compile(r"(?:^|_)(?:frac(?:tion)?s?|labels?|pct)[_-]?(\d+(?:\.\d+)?)(pct|percent)?"
                       r"|(?:^|_)(\d+(?:\.\d+)?)[_-]?(?:pct|percent)")
_SHOT = re.compile(r"(?:^|_)(?:shots?|k)[_-]?(\d+)(?=_|$)|(?:^|_)(\d+)[_-]?shots?(?=_|$)")
_FILE = re.compile(r"^file(_logreg)?_")
FEWSHOT_FILE_LABELS = {0.0: "user list (fine-tune)", 1.0: "user list (logreg)"}


def parse_fewshot_metric(name: str) -> tuple[str, float, str] | None:
    """``("fraction", percent, stat)``, ``("shots", k, stat)`` or ``("file", 0 fine-tune /
    1 logistic regression, stat)`` for a top-1 metric name; stat is "mean", "std" or "" (a
    single seed). None for other metrics (top-5, chosen C, ...)."""
    if "top5" in name or not re.search(r"top1|acc", name):
        return None
    stat = "mean" if name.endswith("_mean") else "std" if name.endswith("_std") else ""
    m = _FILE.match(name)
    if m:
        return ("file", 1.0 if m.group(1) else 0.0, stat)
    m = _FRACTION.search(name)
    if m:
        value = float(m.group(1) or m.group(3))
        percent = value if (m.group(2) or m.group(3) or value >= 1) else value * 100
        return ("fraction", percent, stat)
    m = _SHOT.search(name)
    if m:
        return ("shots", float(m.group(1) or m.group(2)), stat)
    return None


def _fewshot_label(kind: str, value: float) -> str:
    if kind == "file":
        return FEWSHOT_FILE_LABELS[value]
    return f"{fmt_number(value)}% labels" if kind == "fraction" else f"{int(value)}-shot"


def fewshot_table(runs: list[Run], defaults: dict) -> Table:
    main = _sort_runs(_main_grid(runs))
    found: dict[tuple[str, float], str] = {}
    for run in main:
        for ev in run.evals:
            if ev.task == "fewshot":
                for name in ev.metrics:
                    parsed = parse_fewshot_metric(name)
                    if parsed:
                        found[parsed[:2]] = _fewshot_label(*parsed[:2])
    if not found:  # the layout of the configured protocol
        fs = defaults["eval"]["fewshot"]
        for f in fs["fractions"]:
            found[("fraction", f * 100)] = _fewshot_label("fraction", f * 100)
        for k in fs["shots"]:
            found[("shots", float(k))] = _fewshot_label("shots", k)
    kinds = ("fraction", "shots", "file")
    order = sorted(found, key=lambda t: (kinds.index(t[0]), t[1]))
    table = Table(
        name="fewshot", title="Few-shot learning: label fractions and k-shot",
        description="Top-1 accuracy (%) with few labels (`eval/fewshot`): fine-tuning on a "
                    "class-balanced fraction of the training labels (\"1% labels\") and logistic "
                    "regression on frozen features with k images per class (\"k-shot\"); mean ± "
                    "standard deviation over seeds where several seeds ran.",
        key_columns=["method", "backbone", "dataset", "pre-train epochs"],
        columns=[Column(found[k]) for k in order],
        empty_note="No few-shot results yet.")
    for run in main:
        evs = [e for e in run.evals if e.task == "fewshot"]
        keys = {"method": run.method, "backbone": run.backbone, "dataset": run.dataset,
                "pre-train epochs": str(run.epochs)}
        row = _attach(_find_row(table.rows, keys, OURS), run, evs)
        # the default protocol first, so a variant only fills what it alone measured
        for ev in sorted(evs, key=lambda e: (e.variant != "", e.variant)):
            values: dict[tuple, dict[str, tuple[str, float | None]]] = {}
            for name in ev.metrics:
                parsed = parse_fewshot_metric(name)
                if parsed:
                    values.setdefault(parsed[:2], {})[parsed[2]] = (name, ev.metric(name))
            for key, stats in values.items():
                name, value = stats.get("mean") or stats.get("") or (None, None)
                if name is None:
                    continue
                std = stats.get("std", (None, None))[1]
                col = found[key]
                if row.cells.get(col) is None or row.cells[col].missing:
                    row.cells[col] = _eval_cell(run, ev, value=value, std=std, metric=name)
    return _finalise(table)


_MIOU = ("miou", "mIoU")
_PIXEL_ACC = ("pixel_acc", "pixel_accuracy", "acc", "aacc")


def segmentation_table(runs: list[Run], ref) -> Table:
    table = Table(
        name="segmentation", title="Semantic segmentation: mIoU",
        description="Single-scale mIoU (%) and pixel accuracy (%) of a segmentation head "
                    "trained on the pre-trained backbone (`eval/segmentation`); the eval-data "
                    "column names the segmentation dataset, pre-train data the backbone's.",
        key_columns=["method", "backbone", "pre-train data", "eval data", "pre-train epochs",
                     "head"],
        columns=[Column("mIoU"), Column("pixel acc.")], unit="mIoU and pixel accuracy (%)",
        empty_note="No segmentation results yet.")
    for _, p in _published(ref, "segmentation").iterrows():
        keys = {"method": p["method"], "backbone": p["backbone"],
                "pre-train data": p["pretrain_dataset"], "eval data": p["eval_dataset"],
                "pre-train epochs": p["pretrain_epochs"] or None, "head": p["eval_detail"]}
        _published_row(table.rows, keys, p).cells["mIoU"] = _pub_cell(p)
    for run in _sort_runs(_main_grid(runs)):
        evs = [e for e in run.evals if e.task == "segmentation"] or [None]
        seg_cfg = run.cfg["eval"]["segmentation"]
        for ev in evs:
            # the protocol of a run not yet evaluated is unknown (the eval may override it)
            keys = {"method": run.method, "backbone": run.backbone, "pre-train data": run.dataset,
                    "eval data": dataset_label(ev.dataset) if ev else None,
                    "pre-train epochs": str(run.epochs),
                    "head": (ev.variant or seg_cfg["head"]) if ev is not None else None}
            row = _attach(_find_row(table.rows, keys, OURS), run, [ev])
            miou = next((n for n in _MIOU if ev and n in ev.metrics), None)
            acc = next((n for n in _PIXEL_ACC if ev and n in ev.metrics), None)
            _place(table, row, "mIoU", _eval_cell(run, ev if miou else None,
                                                  value=ev.metric(miou) if miou else None,
                                                  metric=miou))
            _place(table, row, "pixel acc.", _eval_cell(run, ev if acc else None,
                                                        value=ev.metric(acc) if acc else None,
                                                        metric=acc))
            if ev is not None and ev.metric("miou_majority") is not None:
                _majority_row(table, run, ev)
    return _finalise(table)


def _majority_row(table: Table, run: Run, ev: EvalResult) -> None:
    """The constant prediction of the most frequent training class, on the same data."""
    keys = {"method": MAJORITY, "backbone": None, "pre-train data": None,
            "eval data": dataset_label(ev.dataset), "pre-train epochs": None, "head": None}
    row = _attach(_find_row(table.rows, keys, OURS), run, [ev])
    _place(table, row, "mIoU", _eval_cell(run, ev, value=ev.metric("miou_majority"),
                                          metric="miou_majority"))
    acc = ev.metric("pixel_acc_majority")
    if acc is not None:
        _place(table, row, "pixel acc.", _eval_cell(run, ev, value=acc,
                                                    metric="pixel_acc_majority"))


_ROBUST_PRIMARY = "mean_corruption_top1"
_SEVERITY = re.compile(r"^(\w+)_s(\d+)_top1$")
_CORRUPTION_MEAN = re.compile(r"^(\w+)_mean_top1$")
_PASS = re.compile(r"^(low|high)pass_r([\d.]+)_top1$")


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def robustness_column(name: str) -> tuple[tuple, str]:
    """(sort key, column label) of a metric of folk.evals.robustness."""
    if name == _ROBUST_PRIMARY:
        return (0,), "mean under corruption"
    if name == "clean_top1":
        return (1,), "clean"
    m = _CORRUPTION_MEAN.match(name)
    if m:
        return (2, m.group(1)), m.group(1).replace("_", " ")
    m = _PASS.match(name)
    if m:
        return (3 if m.group(1) == "low" else 4, float(m.group(2))), \
            f"{m.group(1)}-pass r={m.group(2)}"
    m = _SEVERITY.match(name)
    if m:
        return (5, m.group(1), int(m.group(2))), f"{m.group(1).replace('_', ' ')} s{m.group(2)}"
    return (6, *_natural(name)), name


def robustness_table(runs: list[Run], defaults: dict) -> Table:
    main = _sort_runs(_main_grid(runs))
    names: set[str] = set()
    for run in main:
        for ev in run.evals:
            if ev.task == "robustness":
                names |= {n for n in ev.metrics if "top5" not in n}
    # per-severity accuracies stay in metrics.json when their per-corruption mean is there
    means = {m.group(1) for n in names if (m := _CORRUPTION_MEAN.match(n))}
    names = {n for n in names if not ((m := _SEVERITY.match(n)) and m.group(1) in means)}
    if not names:  # the layout of the configured protocol
        rb = defaults["eval"]["robustness"]
        names = {_ROBUST_PRIMARY, "clean_top1"} | {f"{c}_mean_top1" for c in rb["corruptions"]}
        names |= {f"{k}pass_r{r:g}_top1" for k in ("low", "high") for r in rb["filter_radii"]}
    cols = sorted(names, key=lambda n: robustness_column(n)[0])
    labels = {n: robustness_column(n)[1] for n in cols}
    table = Table(
        name="robustness", title="Robustness: accuracy under corruptions and frequency filtering",
        description="Top-1 accuracy (%) of the fine-tuned classifier on corrupted test images "
                    "(`eval/robustness`): the mean over corruptions and severities "
                    "(`mean_corruption_top1`), clean accuracy, each corruption's mean over "
                    "severities, and low-/high-pass filtered images per radius (stated at "
                    "224 px). Per-severity accuracies are in each metrics.json (source column).",
        key_columns=["method", "backbone", "dataset", "pre-train epochs"],
        columns=[Column(labels[c]) for c in cols], empty_note="No robustness results yet.")
    for run in main:
        evs = [e for e in run.evals if e.task == "robustness"] or [None]
        for ev in evs:
            keys = {"method": run.method, "backbone": run.backbone, "dataset": run.dataset,
                    "pre-train epochs": str(run.epochs)}
            if ev is not None and ev.variant:
                keys["eval protocol"] = ev.variant
                table.add_key_column("eval protocol", after="pre-train epochs")
            row = _attach(_find_row(table.rows, keys, OURS), run, [ev])
            for c in cols:
                has = ev is not None and ev.metric(c) is not None
                _place(table, row, labels[c], _eval_cell(run, ev if has else None,
                                                         value=ev.metric(c) if has else None,
                                                         metric=c))
    return _finalise(table)


# ---------------------------------------------------------------- ablations

def _filter_label(run: Run) -> str:
    m, f = run.cfg["method"], run.cfg["filter"]
    name = m["filter"]
    if name == "com_rcom":
        p = m["p_com"]
        if p == 1.0:
            return "Com only"
        if p == 0.0:
            return "RCom only"
        return f"Com/RCom (p_com={fmt_number(p)})"
    if name == "mfm":
        return f"MFM low/high-pass (r={fmt_number(f['mfm_radius'])}@{f['mfm_radius_ref_size']}px)"
    if name == "random_frequency":
        return f"random frequency (rho={fmt_number(f['random_rho'])})"
    if name == "random_patch":
        return (f"random patch ({fmt_number(f['patch_mask_ratio'] * 100)}%, "
                f"{f['patch_mask_size']}px)")
    return "none (unmasked views)"


def _yes(value) -> str:
    return "yes" if value else "no"


# name: (title, variants of the main grid that form it, varied columns: label -> value of run)
VARIANT_ABLATIONS: dict[str, tuple[str, set[str], dict[str, Callable[[Run], str]]]] = {
    "filter": ("Ablation: student filter",
               {"folk", "folk_mfm_filters", "folk_random_frequency", "folk_random_patch",
                "folk_com_only", "folk_rcom_only", "dino_2view"},
               {"student filter": _filter_label}),
    "distillation": ("Ablation: self-distillation on/off",
                     {"folk", "mfm_comrcom"},
                     {"distillation": lambda r: _yes(r.cfg["method"]["distillation"]),
                      "masked views": lambda r: str(r.cfg["method"]["num_views"])}),
    "reconstruction": ("Ablation: reconstruction loss on/off",
                       {"folk", "folk_no_rec"},
                       {"reconstruction": lambda r: _yes(r.cfg["method"]["reconstruction"])}),
}

# name: (title, varied columns, sort key) for the sweeps of workflow.ablations
SWEEP_ABLATIONS: dict[str, tuple[str, dict[str, Callable[[Run], str]], Callable[[Run], tuple]]] = {
    "portions": ("Ablation: portion set Q",
                 {"portion set Q": lambda r: fmt_value(r.cfg["filter"]["portions"])},
                 lambda r: (len(r.cfg["filter"]["portions"]), r.cfg["filter"]["portions"])),
    "p_com": ("Ablation: probability of Com (p_com)",
              {"p_com": lambda r: fmt_number(r.cfg["method"]["p_com"])},
              lambda r: (r.cfg["method"]["p_com"],)),
    "loss_weights": ("Ablation: loss weights",
                     {"λ_rec": lambda r: fmt_number(r.cfg["pretrain"]["lambda_rec"]),
                      "λ_kd": lambda r: fmt_number(r.cfg["pretrain"]["lambda_kd"])},
                     lambda r: (r.cfg["pretrain"]["lambda_rec"], r.cfg["pretrain"]["lambda_kd"])),
    "epochs": ("Ablation: pre-training epochs",
               {"pre-train epochs": lambda r: str(r.cfg["pretrain"]["epochs"])},
               lambda r: (r.cfg["pretrain"]["epochs"],)),
}

_IGNORED_SECTIONS = ("experiment.", "workflow.", "launch.", "slurm.", "data.root",
                     "data.num_workers", "eval.")


def _varied_keys(runs: list[Run]) -> list[str]:
    """Configuration keys whose values differ among ``runs`` (what a generic ablation varies)."""
    flat = [flatten(r.cfg) for r in runs]
    keys = sorted({k for f in flat for k in f if not k.startswith(_IGNORED_SECTIONS)})
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]


def _ablation_table(name: str, title: str, members: list[Run],
                    varied: dict[str, Callable[[Run], str]], sort_key: Callable[[Run], tuple],
                    description: str) -> Table:
    table = Table(
        name=f"ablation_{name}", title=title, description=description,
        key_columns=list(varied) + ["method", "backbone", "dataset", "run"],
        columns=[Column(c.name) for c in ABLATION_COLUMNS],
        empty_note=f"No runs of this ablation yet (experiment.ablation = '{name}').")
    members = sorted(members, key=lambda r: (r.dataset, r.backbone, sort_key(r), r.rel))
    for run in members:
        keys = {label: get(run) for label, get in varied.items()}
        keys.update({"method": run.method, "backbone": run.backbone, "dataset": run.dataset,
                     "run": run.name + ("" if run.ablation else " (main grid)")})
        evs = {col: run.eval(task, None) for task, col in _TASK_COLUMN.items()}
        row = _attach(_find_row(table.rows, keys, OURS), run, evs.values())
        for col, ev in evs.items():
            _place(table, row, col, _eval_cell(run, ev))
    return _finalise(table)


def ablation_tables(runs: list[Run]) -> list[Table]:
    tables = []
    main = [r for r in _main_grid(runs) if not r.is_random_init]
    for name, (title, variants, varied) in VARIANT_ABLATIONS.items():
        members = [r for r in main if r.variant in variants] + \
                  [r for r in runs if r.ablation == name]
        order = sorted(variants, key=variant_rank)
        tables.append(_ablation_table(
            name, title, members, varied,
            lambda r: (variant_rank(r.variant),),
            f"Variants of the main grid that differ only in {', '.join(varied)} "
            f"({', '.join(order)}), plus runs with experiment.ablation = '{name}'; top-1 (%) of "
            "k-NN, linear probe and fine-tuning."))
    for name, (title, varied, sort_key) in SWEEP_ABLATIONS.items():
        sweep = [r for r in runs if r.ablation == name]
        tables.append(_ablation_table(name, title, _with_baseline(sweep, main), varied, sort_key,
                                      f"Runs with experiment.ablation = '{name}' and the main-"
                                      "grid run of the same variant and experiment (the "
                                      "default setting); top-1 (%) of k-NN, linear probe and "
                                      "fine-tuning."))
    known = set(VARIANT_ABLATIONS) | set(SWEEP_ABLATIONS)
    for name in sorted({r.ablation for r in runs} - known - {""}):
        sweep = [r for r in runs if r.ablation == name]
        members = _with_baseline(sweep, main)
        keys = _varied_keys(members)
        varied = {k: (lambda r, k=k: fmt_value(flatten(r.cfg).get(k))) for k in keys} or \
                 {"setting": lambda r: r.name}
        tables.append(_ablation_table(
            name, f"Ablation: {name}", members, varied,
            lambda r: tuple(repr(flatten(r.cfg).get(k)) for k in keys),
            f"Runs with experiment.ablation = '{name}' (and the matching main-grid run); the "
            f"columns before 'method' are the configuration keys that differ among them."))
    return tables


def _with_baseline(sweep: list[Run], main: list[Run]) -> list[Run]:
    """The sweep's runs plus the main-grid runs of the same (experiment, variant)."""
    pairs = {(r.experiment, r.variant) for r in sweep}
    return [r for r in main if (r.experiment, r.variant) in pairs] + sweep


# ---------------------------------------------------------------- compute

IMG_S, WALL_H, GPU_H, CPU_H, MEM = ("images/s", "wall time (h)", "GPU-hours", "CPU-hours",
                                    "peak memory (MB)")
EVAL_H = "eval time (h)"


def _is_cpu(device: str) -> bool:
    return str(device).lower().startswith("cpu")


def compute_table(runs: list[Run], ref) -> Table:
    table = Table(
        name="compute", title="Compute: throughput, time and memory of each pre-training run",
        description="Per pre-training run (from its DONE.json): median training images/s, "
                    "wall time, device-hours = wall time × world size (GPU-hours on GPUs, "
                    "CPU-hours = process-hours on CPUs), peak device memory; and the summed "
                    "wall time of its evaluations (metrics.json wall_time_s).",
        key_columns=["experiment", "run", "method", "backbone", "dataset", "pre-train epochs",
                     "device", "devices"],
        columns=[Column(IMG_S, 0), Column(WALL_H, "auto"), Column(GPU_H, "auto"),
                 Column(CPU_H, "auto"), Column(MEM, 0), Column(EVAL_H, "auto")],
        unit="as named in each column header", empty_note="No pre-training runs yet.")
    pub = ref[ref["task"] == "compute"]
    for (method, backbone, epochs), grp in pub.groupby(["method", "backbone", "pretrain_epochs"],
                                                       sort=False):
        vals = {r["metric"]: float(r["value"]) for _, r in grp.iterrows()}
        first = grp.iloc[0]
        keys = {"experiment": None, "run": None, "method": method, "backbone": backbone,
                "dataset": first["pretrain_dataset"], "pre-train epochs": epochs or None,
                "device": "GPU (unspecified)",
                "devices": fmt_number(vals["devices"]) if "devices" in vals else None}
        row = _published_row(table.rows, keys, first)
        if "wall_time_h" in vals:
            row.cells[WALL_H] = Cell(value=vals["wall_time_h"], detail=first["source"])
            if "devices" in vals:
                row.cells[GPU_H] = Cell(value=vals["wall_time_h"] * vals["devices"],
                                        detail=first["source"])
    for run in sorted(runs, key=lambda r: (r.experiment, r.ablation, variant_rank(r.variant), r.rel)):
        done = run.done or {}
        keys = {"experiment": run.experiment, "run": run.name, "method": run.method,
                "backbone": run.backbone, "dataset": run.dataset,
                "pre-train epochs": str(run.epochs),
                "device": done.get("device") or None,
                "devices": str(done["world_size"]) if done.get("world_size") else None}
        row = _attach(_find_row(table.rows, keys, OURS), run)
        if not run.done:
            row.notes.append(f"{run.rel}: no DONE.json (run not finished)")
        source = f"{run.rel}/DONE.json"
        detail = f"run {run.rel}, DONE.json"

        def cell(value) -> Cell:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            return Cell(value=float(value), source=source, detail=detail) if ok else Cell()

        wall = done.get("wall_time_s")
        row.cells[IMG_S] = cell(done.get("images_per_s"))
        row.cells[WALL_H] = cell(wall / 3600 if isinstance(wall, (int, float)) else None)
        world = done.get("world_size")
        if isinstance(wall, (int, float)) and isinstance(world, int):
            hours = cell(wall * world / 3600)
            row.cells[CPU_H if _is_cpu(done.get("device", "")) else GPU_H] = hours
        row.cells[MEM] = cell(done.get("peak_memory_mb"))
        eval_s = [e.record.get("wall_time_s") for e in run.evals]
        eval_s = [s for s in eval_s if isinstance(s, (int, float))]
        if eval_s:
            row.cells[EVAL_H] = Cell(value=sum(eval_s) / 3600,
                                     source=";".join(e.rel for e in run.evals),
                                     detail=f"run {run.rel}, sum over {len(eval_s)} evaluation(s)")
    return _finalise(table, higher_is_better=False)


# ---------------------------------------------------------------- all

def build_tables(runs: list[Run], ref, defaults: dict) -> list[Table]:
    """Result tables over the runs with seed siblings merged (mean ± spread over seeds);
    the compute table lists every run."""
    merged = merge_seeds(runs)
    return [finetune_table(merged, ref), fewshot_table(merged, defaults),
            segmentation_table(merged, ref), resnet_table(merged, ref), *ablation_tables(merged),
            knn_linear_table(merged, ref), robustness_table(merged, defaults),
            compute_table(runs, ref)]
