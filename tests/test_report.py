"""`folk report` on fixture run directories: every table in four formats with the fixtures'
values, missing results kept missing, LaTeX and HTML escaped, figures of the promised size,
the runs page, README."""

from __future__ import annotations

import json
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from report_fixtures import DEMO, build_runs, write_run  # noqa: E402

from folk.cli import main  # noqa: E402

TABLES = [
    "finetune",
    "fewshot",
    "segmentation",
    "resnet50",
    "knn_linear",
    "robustness",
    "compute",
    "ablation_filter",
    "ablation_portions",
    "ablation_p_com",
    "ablation_loss_weights",
    "ablation_distillation",
    "ablation_reconstruction",
    "ablation_epochs",
]
FIGURES = [
    "fig1_filters",
    "fig4_masking",
    "fig5_reconstruction_loss",
    "knn_epochs",
    "teacher_diagnostics",
    "throughput",
]
DEMO_BACKBONE = "ViT-T/4 @32px"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    runs = build_runs(root / "runs")
    out = root / "results"
    assert main(["report", "--runs", str(runs), "--out", str(out)]) == 0
    return out


def read_csv(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / "tables" / f"{name}.csv", comment="#")


def md_rows(out: Path, name: str) -> list[list[str]]:
    """The Markdown table as lists of cell texts (header first, separator dropped)."""
    lines = [
        l for l in (out / "tables" / f"{name}.md").read_text().splitlines() if l.startswith("|")
    ]
    # a cell's text without its link (values link to their logs, methods to their configs)
    lines = [re.sub(r"\[([^\[\]]*)\]\((?:\.\./runs/)[^)]*\)", r"\1", l) for l in lines]
    rows = [[c.strip() for c in l.strip("|").split(" | ")] for l in lines]
    return [rows[0]] + rows[2:]


def md_cell(out: Path, name: str, first: str, column: str, **where) -> str:
    """Cell ``column`` of the row whose first cell starts with ``first`` and whose other
    cells match ``where`` (column -> text)."""
    header, *rows = md_rows(out, name)
    for row in rows:
        d = dict(zip(header, row))
        if row[0].startswith(first + " [") and all(d[k] == v for k, v in where.items()):
            return d[column]
    raise AssertionError(f"no row {first} {where} in {name}.md")


def ours(df: pd.DataFrame, **where) -> pd.Series:
    sel = df[df["results"] == "ours"]
    for k, v in where.items():
        sel = sel[sel[k].astype(str) == str(v)]
    assert len(sel) == 1, f"{where}: {len(sel)} rows"
    return sel.iloc[0]


def test_every_table_in_four_formats_and_every_figure(report):
    for name in TABLES + ["ablation_augment"]:
        for ext in ("md", "tex", "csv", "html"):
            path = report / "tables" / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
    for name in FIGURES:
        png, pdf = report / "figures" / f"{name}.png", report / "figures" / f"{name}.pdf"
        with Image.open(png) as im:
            assert im.size == (1600, 900)
            assert im.format == "PNG"
            # not blank: a drawn figure has many distinct colours
            assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def test_cell_values_equal_the_fixtures(report):
    ft = read_csv(report, "finetune")
    folk_demo = ours(ft, method="folk", dataset="Fashion-MNIST")
    assert folk_demo[DEMO_BACKBONE] == 80.125
    assert folk_demo["source"] == "demo/folk/eval/finetune/metrics.json"
    assert folk_demo["run_dir"] == "demo/folk"
    assert ours(ft, method="folk", dataset="ImageNet-1K")["ViT-S/16"] == 82.5

    kl = read_csv(report, "knn_linear")
    row = ours(kl, method="folk", dataset="Fashion-MNIST")
    assert (row["k-NN top-1"], row["linear top-1"]) == (71.25, 75.5)
    assert row["source"].split(";") == [
        "demo/folk/eval/knn/metrics.json",
        "demo/folk/eval/linear/metrics.json",
    ]
    assert ours(kl, method="folk_no_rec")["linear top-1"] == 66.0

    fs = read_csv(report, "fewshot")
    row = ours(fs, method="folk", dataset="Fashion-MNIST")
    assert (row["1% labels"], row["1% labels std"]) == (40.0, 1.5)
    assert (row["10% labels"], row["10% labels std"]) == (55.25, 0.75)
    assert (row["5-shot"], row["5-shot std"]) == (50.0, 1.0)
    assert md_cell(report, "fewshot", "folk", "1-shot", dataset="Fashion-MNIST") == "30.0 ± 2.0"

    seg = ours(
        read_csv(report, "segmentation"), method="folk", **{"pre-train data": "Fashion-MNIST"}
    )
    assert (seg["mIoU"], seg["pixel acc."], seg["eval data"]) == (
        33.375,
        80.5,
        "Fashion-MNIST composite",
    )
    assert ours(fs, method="folk", dataset="Fashion-MNIST")["user list (logreg)"] == 45.0

    rob_df = read_csv(report, "robustness")
    rob = ours(rob_df, method="folk", dataset="Fashion-MNIST")
    assert (rob["mean under corruption"], rob["clean"], rob["gaussian noise"], rob["jpeg"]) == (
        60.5,
        79.0,
        65.0,
        56.0,
    )
    assert (rob["low-pass r=4"], rob["low-pass r=16"], rob["high-pass r=4"]) == (50.0, 75.0, 20.0)
    assert pd.isna(rob["high-pass r=16"])  # not measured: missing, not a number
    partial = ours(rob_df, method="folk_no_rec")
    assert partial["high-pass r=16"] == 10.0 and pd.isna(partial["jpeg"])
    assert md_cell(report, "robustness", "folk_no_rec", "jpeg") == "–"
    # per-severity numbers stay in metrics.json when the per-corruption mean is there
    assert not any(" s1" in c or " s3" in c for c in rob_df.columns)

    r50 = ours(read_csv(report, "resnet50"), method="folk")
    assert (r50["fine-tune top-1"], r50["k-NN top-1"], r50["fine-tune epochs"]) == (79.0, 60.0, 100)
    assert pd.isna(r50["linear top-1"])


def test_published_numbers_beside_ours_with_source_and_dataset(report):
    ft = read_csv(report, "finetune")
    mfm = ft[(ft["results"] == "published") & (ft["method"] == "MFM")].iloc[0]
    assert mfm["ViT-B/16"] == 83.1 and mfm["dataset"] == "ImageNet-1K"
    assert "Jiahao000/MFM README" in mfm["notes"]
    md = (report / "tables" / "finetune.md").read_text()
    assert "*published*" in md and "Jiahao000/MFM README" in md
    # the demo's dataset and its note are visible next to its numbers
    assert "Fashion-MNIST demo, 2000 images" in md
    assert (
        md_cell(report, "finetune", "folk", "dataset", **{"pre-train epochs": "5"})
        == "Fashion-MNIST"
    )
    kl = read_csv(report, "knn_linear")
    dino = kl[(kl["method"] == "DINO") & (kl["pre-train epochs"] == 100)].iloc[0]
    assert (dino["k-NN top-1"], dino["linear top-1"]) == (69.3, 74.0)


def test_missing_results_stay_missing(report):
    kl = read_csv(report, "knn_linear")
    assert pd.isna(ours(kl, method="mfm")["linear top-1"])  # knn but no linear
    assert ours(kl, method="mfm")["k-NN top-1"] == 62.0
    assert md_cell(report, "knn_linear", "mfm", "linear top-1") == "–"
    assert md_cell(report, "knn_linear", "dino_2view", "k-NN top-1") == "–"
    comp = read_csv(report, "compute")
    unfinished = ours(comp, run="mfm_comrcom")  # no DONE.json
    for col in ("images/s", "wall time (h)", "GPU-hours", "CPU-hours", "peak memory (MB)"):
        assert pd.isna(unfinished[col])
    assert "no DONE.json" in unfinished["notes"]
    for name in TABLES:
        for ext in ("md", "tex"):
            text = (report / "tables" / f"{name}.{ext}").read_text()
            assert not re.search(r"\bnan\b", text, re.I), (name, ext)


def test_compute_hours_are_wall_time_times_devices(report):
    comp = read_csv(report, "compute")
    demo = ours(comp, experiment="demo", run="folk")
    # DONE.json: wall_time_s 7200, world_size 2, cpu device -> 2 h wall, 4 CPU-hours
    assert (demo["wall time (h)"], demo["CPU-hours"], demo["images/s"]) == (2.0, 4.0, 250.5)
    assert pd.isna(demo["GPU-hours"]) and demo["device"].startswith("cpu")
    assert demo["source"].split(";")[0] == "demo/folk/DONE.json"
    assert "demo/folk/eval/knn/metrics.json" in demo["source"].split(";")
    gpu = ours(comp, experiment="in1k", run="folk")
    assert gpu["GPU-hours"] == pytest.approx(36000 * 16 / 3600) and pd.isna(gpu["CPU-hours"])
    assert demo["eval time (h)"] == pytest.approx(6 * 360 / 3600)


def test_ablations_grouped_by_config_not_by_name(report):
    pc = read_csv(report, "ablation_p_com")
    got = {float(r["p_com"]): r["k-NN top-1"] for _, r in pc.iterrows()}
    assert got == {0.25: 68.0, 0.5: 71.25, 0.75: 69.5}  # 0.5: the main-grid folk run
    assert ours(pc, p_com=0.75)["linear top-1"] == 70.0
    por = read_csv(report, "ablation_portions")
    assert set(por["portion set Q"]) == {"{0.01}", "{0.005, 0.01, 0.05}"}
    lw = ours(read_csv(report, "ablation_loss_weights"), run="sweep_d")
    assert (lw["λ_rec"], lw["λ_kd"], lw["k-NN top-1"]) == (1, 0.5, 67.0)
    ep = read_csv(report, "ablation_epochs")
    assert {int(r["pre-train epochs"]): r["k-NN top-1"] for _, r in ep.iterrows()} == {
        2: 55.0,
        5: 71.25,
    }
    dist = read_csv(report, "ablation_distillation")
    assert {r["method"]: r["distillation"] for _, r in dist.iterrows()} == {
        "folk": "yes",
        "mfm_comrcom": "no",
    }
    rec = read_csv(report, "ablation_reconstruction")
    assert set(zip(rec["method"], rec["reconstruction"])) == {
        ("folk", "yes"),
        ("folk_no_rec", "no"),
    }
    filt = read_csv(report, "ablation_filter")
    demo = filt[filt["dataset"] == "Fashion-MNIST"]
    assert set(demo["method"]) == {"folk", "folk_mfm_filters", "dino_2view"}
    # an ablation the report does not know: the varied key is found in the configs
    aug = read_csv(report, "ablation_augment")
    assert {float(r["augment.flip_prob"]): r["k-NN top-1"] for _, r in aug.iterrows()} == {
        0.0: 64.0,
        0.5: 71.25,
    }


class _HTMLTable(HTMLParser):
    """The cell texts of an HTML page's first table, row by row, and its other text."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._tables = 0
        self._sup = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._tables += 1
        elif tag == "tr" and self._tables == 1:
            self.rows.append([])
        elif tag in ("td", "th") and self._tables == 1:
            self._cell = []
        elif tag == "sup":
            self._sup = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "sup":
            self._sup = False

    def handle_data(self, data):
        if self._cell is not None and not self._sup:
            self._cell.append(data)
        self.text.append(data)


def html_table(out: Path, name: str) -> _HTMLTable:
    parser = _HTMLTable()
    parser.feed((out / "tables" / f"{name}.html").read_text())
    parser.close()
    return parser


def test_html_tables_hold_the_markdown_cells_and_the_protocol(report):
    for name in TABLES:
        page = html_table(report, name)
        header, *rows = md_rows(report, name)
        # the Markdown cells, without the footnote markers the HTML puts in <sup>
        md = [header] + [[re.sub(r" \[p?\d+\]$", "", row[0])] + row[1:] for row in rows]
        md = [[c.replace("\\|", "|").strip("*") for c in row] for row in md]
        assert page.rows == md, name
        text = " ".join(page.text)
        assert "Generated by" in text and "Sources" in text, name
    page = html_table(report, "knn_linear")
    assert "weighted k-NN classifier" in " ".join(page.text)  # the protocol
    assert md_cell(report, "knn_linear", "folk", "k-NN top-1", dataset="Fashion-MNIST") == "71.2"
    assert ["folk", "ViT-T/4 @32px", "Fashion-MNIST", "5", "ours", "71.2", "75.5"] in page.rows


def test_html_escapes_what_it_shows():
    from folk.report.table import Cell, Column, Row, Table
    from folk.report.writers import Stamp, to_html

    table = Table(
        name="t",
        title="a <b> & c",
        description="uses `x<y` and <script>",
        key_columns=["method"],
        columns=[Column("top-1 <%>")],
        rows=[Row(keys={"method": "m&<n>"}, cells={"top-1 <%>": Cell(1.0, source="a<b>")})],
    )
    page = to_html(table, Stamp("0" * 40, False, "2026-01-01", "runs/<x>"))
    assert "<script>" not in page and "<b>" not in page and "<n>" not in page
    assert "m&amp;&lt;n&gt;" in page and "<code>x&lt;y</code>" in page
    assert "top-1 &lt;%&gt;" in page


def test_runs_page_lists_every_run_with_its_config(report):
    from folk.report.runs_page import run_anchor

    page = (report / "runs.html").read_text()
    runs = sorted(p.parent for p in (report.parent / "runs").rglob("config.yaml"))
    assert runs
    for run_dir in runs:
        rel = run_dir.relative_to(report.parent / "runs").as_posix()
        assert f'id="{run_anchor(rel)}"' in page and f'href="#{run_anchor(rel)}"' in page, rel
    folk = page.split(f'id="{run_anchor("demo/folk")}"')[1].split("</details>")[0]
    assert "run_name: folk" in folk and "variant: folk" in folk  # its config.yaml
    row = next(r for r in page.split("<tr>") if ">demo/folk</a>" in r)
    assert "knn_linear" in row and "finetune" in row  # the tables citing it


def test_teacher_diagnostics_draws_the_runs_with_distillation(tmp_path):
    from folk.report.collect import collect_runs
    from folk.report.figures import figure_teacher_diagnostics

    runs = collect_runs(build_runs(tmp_path / "runs"))
    info = figure_teacher_diagnostics(runs, tmp_path / "fig")
    # the fixtures' folk run alone logs kd_teacher_entropy and kd_kl
    assert info.has_data and info.runs == ["demo/folk"]
    with Image.open(tmp_path / "fig" / "teacher_diagnostics.png") as im:
        assert im.size == (1600, 900)
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
    empty = figure_teacher_diagnostics([], tmp_path / "empty")
    assert not empty.has_data and empty.note == "no distillation diagnostics yet"
    assert (tmp_path / "empty" / "teacher_diagnostics.pdf").read_bytes()[:5] == b"%PDF-"


def test_latex_escapes_special_characters(report):
    fewshot = (report / "tables" / "fewshot.tex").read_text()
    assert r"1\% labels" in fewshot and r"40.0 $\pm$ 1.5" in fewshot
    rec = (report / "tables" / "ablation_reconstruction.tex").read_text()
    assert r"folk\_no\_rec" in rec
    for name in TABLES:
        for line in (report / "tables" / f"{name}.tex").read_text().splitlines():
            if line.startswith("%"):
                continue
            # every _ % # is escaped; & only separates cells
            assert not re.search(r"(?<!\\)[_%#]", line), (name, line)
            for cell in line.split(" & "):
                assert not re.search(r"(?<!\\)&", cell), (name, line)
        assert "\\toprule" in (report / "tables" / f"{name}.tex").read_text()


def test_provenance_stamp_in_every_file(report):
    for name in TABLES:
        for ext in ("md", "tex", "csv"):
            text = (report / "tables" / f"{name}.{ext}").read_text()
            assert "Generated by" in text and re.search(r"\d{4}-\d\d-\d\d", text), (name, ext)
    kl = (report / "tables" / "knn_linear.md").read_text()
    assert "aaaaaaaaaaaa" in kl and "bbbbbbbbbbbb" in kl  # DONE.json and metrics.json SHAs
    assert "demo/folk/eval/knn/metrics.json" in kl


def test_readme_lists_every_file_and_its_runs(report):
    readme = (report / "README.md").read_text()
    for name in TABLES:
        for ext in ("md", "tex", "csv"):
            assert f"tables/{name}.{ext}" in readme
    for name in FIGURES:
        assert f"figures/{name}.png" in readme and f"figures/{name}.pdf" in readme
    assert "folk report --runs" in readme and "snakemake --cores 2 report" in readme
    fig5 = readme.split("### Fig. 5")[1].split("###")[0]
    assert "demo/mfm`" in fig5 and "demo/mfm_comrcom`" in fig5 and "demo/folk`" not in fig5
    bench = readme.split("### Throughput")[1]
    assert "demo/bench.jsonl" in bench
    assert "demo/bench_data.jsonl" in bench and "imagefolder (data/photos)" in bench


def test_throughput_figure_has_the_loader_beside_the_step(tmp_path):
    from folk.report.collect import collect_bench
    from folk.report.figures import _input_rows, figure_throughput
    from folk.errors import RunDirError

    runs = build_runs(tmp_path / "runs")
    bench = collect_bench(runs)
    assert {b.record["type"] for b in bench} == {"bench", "bench_data"}
    bars = {r["variant"]: r["images_per_s"] for r in _input_rows(bench)}
    assert bars == {
        "input: ours, 1 core": 40.0,
        "input: DINO's, 1 core": 50.0,
        "input: ours, 2 workers": 80.0,
        "input + step": 78.0,
    }
    info = figure_throughput(bench, tmp_path / "fig")
    assert info.has_data and (tmp_path / "fig" / "throughput.png").is_file()
    assert info.datasets == ["random tensors (no data loading)", "imagefolder (data/photos)"]
    with open(runs / "demo" / "bench_data.jsonl", "a") as f:
        f.write(
            json.dumps(
                {
                    "type": "bench_data",
                    "measure": "summary",
                    "variant": "folk",
                    "arch": "vit_tiny_patch16_224",
                    "device": "cpu",
                }
            )
            + "\n"
        )
    with pytest.raises(RunDirError, match="bench_data record 7 lacks key"):
        collect_bench(runs)


def test_empty_runs_directory_writes_every_layout(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    out = tmp_path / "results"
    assert main(["report", "--runs", str(runs), "--out", str(out)]) == 0
    for name in TABLES:
        df = read_csv(out, name)
        assert (df["results"] != "ours").all()
        assert len(df.columns) > 4
        md = (out / "tables" / f"{name}.md").read_text()
        assert "|" in md and ("No " in md)
    # the few-shot layout is the configured protocol even without results
    assert {"1% labels", "10% labels", "1-shot", "13-shot"} <= set(read_csv(out, "fewshot").columns)
    assert {"mean under corruption", "clean", "jpeg", "low-pass r=4", "high-pass r=32"} <= set(
        read_csv(out, "robustness").columns
    )
    for name in FIGURES:
        with Image.open(out / "figures" / f"{name}.png") as im:
            assert im.size == (1600, 900)
    assert "no results yet" in (out / "README.md").read_text()


def test_bad_inputs_are_named(tmp_path, capsys):
    assert main(["report", "--runs", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
    assert "absent" in capsys.readouterr().err
    runs = tmp_path / "runs"
    run = write_run(
        runs, "demo", "folk", "folk", DEMO, evals={"knn": ({"top1_k20": 70.0}, "top1_k20")}
    )
    bad = run / "eval" / "knn" / "metrics.json"
    bad.write_text("{not json")
    assert main(["report", "--runs", str(runs), "--out", str(tmp_path / "o")]) == 2
    assert str(bad) in capsys.readouterr().err
    bad.write_text(
        json.dumps(
            {
                "schema": "folk.eval/1",
                "run": "folk",
                "task": "knn",
                "variant": "",
                "dataset": "x",
                "metrics": {},
                "primary": "top1",
            }
        )
    )
    assert main(["report", "--runs", str(runs), "--out", str(tmp_path / "o")]) == 2
    assert "primary metric 'top1'" in capsys.readouterr().err
    shutil.rmtree(run / "eval")
    ref = tmp_path / "ref.csv"
    ref.write_text("method,value\nMFM,83.1\n")
    assert (
        main(["report", "--runs", str(runs), "--out", str(tmp_path / "o"), "--ref", str(ref)]) == 1
    )  # a data file that cannot be used (DataError)
    assert "missing column(s)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written before the inputs are valid


def test_fewshot_metric_names():
    """The few-shot columns are read from the names folk.evals.fewshot writes, no others."""
    from folk.eval_tasks import declared_columns

    metrics = dict.fromkeys(
        [
            "frac1pct_top1_mean",
            "frac1pct_top1_std",
            "frac0.5pct_top1_mean",
            "frac0.5pct_top1_std",
            "file_logreg_top1_mean",
            "file_top1",
            "shot13_top1_mean",
            "shot5_top5_mean",
            "best_c",
            "fraction0.1_top1_std",
            "10pct_top1",
            "5shot_top1_mean",
        ],
        1.0,
    )
    got = {
        c.metric: (c.label, c.group, c.order[1], c.std)
        for c in declared_columns("fewshot", metrics, "shot13_top1_mean")
    }
    assert got == {
        "frac1pct_top1_mean": ("1% labels", "fraction", 1.0, "frac1pct_top1_std"),
        "frac0.5pct_top1_mean": ("0.5% labels", "fraction", 0.5, "frac0.5pct_top1_std"),
        "file_logreg_top1_mean": ("user list (logreg)", "file", 1.0, None),
        "file_top1": ("user list (fine-tune)", "file", 0.0, None),
        "shot13_top1_mean": ("13-shot", "shots", 13.0, None),
    }


def test_the_report_reads_the_columns_a_record_states(tmp_path):
    """A record's own columns (label, order, std) make the table, not the metric names."""
    from folk.errors import RunDirError
    from folk.report.collect import collect_runs
    from folk.report.tables.fewshot import fewshot_table

    runs = tmp_path / "runs"
    run = write_run(
        runs,
        "demo",
        "folk",
        "folk",
        DEMO,
        evals={"fewshot": ({"a": 40.0, "a_spread": 1.5, "b": 30.0}, "a")},
    )
    path = run / "eval" / "fewshot" / "metrics.json"
    rec = json.loads(path.read_text())
    rec["columns"] = [
        {"metric": "b", "label": "second", "group": "g", "order": [2], "std": None},
        {"metric": "a", "label": "first", "group": "g", "order": [1], "std": "a_spread"},
    ]
    path.write_text(json.dumps(rec))
    table = fewshot_table(collect_runs(runs), {})
    assert [c.name for c in table.columns] == ["first", "second"]
    cell = table.our_rows[0].cells["first"]
    assert (cell.value, cell.std) == (40.0, 1.5)
    rec["columns"][0]["metric"] = "absent"
    path.write_text(json.dumps(rec))
    with pytest.raises(RunDirError, match=r"columns\[0\].*'absent' is not among 'metrics'"):
        collect_runs(runs)


# The published baseline results, each read from the named project's own README: the
# packaged reference file must hold exactly these (method, backbone, top-1 or mIoU)
PUBLISHED = [
    ("MFM", "ViT-B/16", 83.1),
    ("MFM", "ResNet-50", 78.5),
    ("MFM", "ResNet-50", 80.1),
    ("SR (MFM paper)", "ViT-B/16", 82.4),
    ("Deblur (MFM paper)", "ViT-B/16", 81.7),
    ("Denoise (MFM paper)", "ViT-B/16", 82.7),
    ("DINO", "ViT-S/16", 69.3),
    ("DINO", "ViT-S/16", 74.0),
    ("DINO", "ViT-S/16", 73.3),
    ("DINO", "ViT-S/16", 76.0),
    ("iBOT", "ViT-S/16", 75.2),
    ("iBOT", "ViT-S/16", 77.9),
    ("iBOT", "ViT-S/16", 82.3),
    ("iBOT", "ViT-B/16", 84.0),
    ("iBOT", "ViT-B/16", 50.0),
    ("MAE", "ViT-B/16", 83.6),
]


def test_reference_file_holds_the_published_numbers():
    from folk.report.collect import load_reference

    ref = load_reference()
    got = sorted(
        (r["method"], r["backbone"], r["value"])
        for _, r in ref.iterrows()
        if r["task"] != "compute"
    )
    assert got == sorted(PUBLISHED)


@pytest.mark.slow
def test_report_on_real_pretraining_runs(tmp_path, fashion_root):
    """The producers' real files (folk pretrain, folk eval knn) read by the report."""
    import torch
    from conftest import REPO, tiny_overrides

    torch.set_num_threads(1)
    runs = tmp_path / "runs"
    sets = [f"--set={o}" for o in tiny_overrides(fashion_root)] + [
        "--set=experiment.name=tiny",
        "--set=pretrain.knn_every=1",
        "--set=pretrain.knn_train_images=64",
        "--set=pretrain.knn_test_images=40",
        "--set=experiment.dataset_note=tiny test run",
    ]
    for variant in ("mfm", "mfm_comrcom"):
        run_dir = runs / "tiny" / variant
        assert (
            main(
                [
                    "pretrain",
                    "--config",
                    str(REPO / "params" / "test_tiny.yaml"),
                    *sets,
                    f"--set=pretrain.variant={variant}",
                    f"--set=experiment.run_name={variant}",
                    "--out",
                    str(run_dir),
                ]
            )
            == 0
        )
    assert main(["eval", "knn", "--run", str(runs / "tiny" / "mfm")]) == 0
    out = tmp_path / "results"
    assert main(["report", "--runs", str(runs), "--out", str(out)]) == 0
    knn = json.loads((runs / "tiny" / "mfm" / "eval" / "knn" / "metrics.json").read_text())
    row = ours(read_csv(out, "knn_linear"), method="mfm")
    assert row["k-NN top-1"] == pytest.approx(knn["metrics"][knn["primary"]])
    assert pd.isna(row["linear top-1"])
    done = json.loads((runs / "tiny" / "mfm" / "DONE.json").read_text())
    comp = ours(read_csv(out, "compute"), run="mfm")
    assert comp["wall time (h)"] == pytest.approx(done["wall_time_s"] / 3600)
    readme = (out / "README.md").read_text()
    fig5 = readme.split("### Fig. 5")[1].split("###")[0]
    assert "tiny/mfm`" in fig5 and "tiny/mfm_comrcom`" in fig5
    knn_fig = readme.split("### k-NN accuracy")[1].split("###")[0]
    assert "tiny/mfm`" in knn_fig
