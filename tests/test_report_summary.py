"""What the report keeps in git for DVC and the README (folk.report.summary): metrics.json
holds every number of our table rows, the curve files hold the training records as they
were logged, provenance.json names code, machines and date, and the README's headline
block is replaced in place, never appended; expectations are written out by hand."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from folk.cli import main
from folk.errors import ConfigError
from folk.report import build_report
from folk.report.summary import HEADLINE_BEGIN, HEADLINE_END, metrics_summary
from folk.report.table import PUBLISHED, Cell, Column, Row, Table
from report_fixtures import DEMO, knn_records, loss_records, write_run

README = f"# Project\n\nIntro.\n\n## Headline result\n\n{HEADLINE_BEGIN}\nold\n{HEADLINE_END}\n\n## Next\n"


def small_grid(root: Path) -> Path:
    """A demo experiment: folk and mfm trained, with curves; a random initialisation; one
    ablation run."""
    runs = root / "runs"
    write_run(
        runs,
        "demo",
        "folk",
        "folk",
        DEMO,
        evals={"knn": ({"top1_k20": 71.25}, "top1_k20"), "linear": ({"top1": 75.5}, "top1")},
        records=loss_records(2.0, 0.1, epochs=2, per_epoch=2)
        + [{"type": "train", "epoch": 1, "iteration": 5, "loss": 1.0, "kd_teacher_entropy": 5.2}]
        + knn_records([30.0, 45.0]),
    )
    write_run(
        runs,
        "demo",
        "mfm",
        "mfm",
        DEMO,
        evals={"knn": ({"top1_k20": 62.0}, "top1_k20")},
        records=loss_records(3.0, 0.5, epochs=1, per_epoch=2),
    )
    write_run(
        runs,
        "demo",
        "random_init",
        "folk",
        [*DEMO, "pretrain.epochs=0"],
        evals={"knn": ({"top1_k20": 20.5}, "top1_k20")},
    )
    write_run(
        runs,
        "demo",
        "folk-p_com0.25",
        "folk",
        [*DEMO, "filter.p_com=0.25"],
        ablation="p_com",
        records=loss_records(2.0, 0.1),
    )
    return runs / "demo"


def read_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_metrics_summary_keeps_our_numbers_and_spreads_only():
    table = Table(
        name="knn_linear",
        title="t",
        description="d",
        key_columns=["method", "backbone"],
        columns=[Column("k-NN"), Column("linear")],
        rows=[
            Row(
                {"method": "folk", "backbone": "ResNet-18"},
                {"k-NN": Cell(65.25, std=0.5), "linear": Cell(None)},
            ),
            Row({"method": "random init", "backbone": "ResNet-18"}, {"k-NN": Cell(23.5)}),
            Row({"method": "MFM", "backbone": "ViT-B/16"}, {"k-NN": Cell(80.0)}, origin=PUBLISHED),
            Row({"method": "mfm", "backbone": None}, {"linear": Cell(None)}),  # nothing yet
        ],
    )
    empty = Table(name="robustness", title="r", description="", key_columns=["m"], columns=[])
    assert metrics_summary([table, empty]) == {
        "knn_linear": {
            "folk / ResNet-18": {"k-NN": 65.25, "k-NN ±": 0.5},
            "random init / ResNet-18": {"k-NN": 23.5},
        }
    }


def test_report_writes_curves_metrics_and_provenance(tmp_path):
    runs = small_grid(tmp_path)
    out = tmp_path / "results" / "demo"
    build_report(runs, out)
    # curves of the trained main-grid runs only
    assert sorted(p.name for p in (out / "plots" / "train").iterdir()) == ["folk.csv", "mfm.csv"]
    assert sorted(p.name for p in (out / "plots" / "knn").iterdir()) == ["folk.csv", "mfm.csv"]
    folk = read_rows(out / "plots" / "train" / "folk.csv")
    # loss_records(2.0, 0.1, 2, 2): iterations 1-4, loss 2.0 - 0.1 * it, then the extra record
    assert [(r["iteration"], r["epoch"], r["loss"]) for r in folk] == [
        ("1", "0", "1.9"),
        ("2", "0", "1.8"),
        ("3", "1", "1.7"),
        ("4", "1", "1.6"),
        ("5", "1", "1.0"),
    ]
    assert [r["kd_teacher_entropy"] for r in folk] == ["", "", "", "", "5.2"]
    assert [r["loss_kd"] for r in folk] == [""] * 5  # the same columns for every variant
    assert read_rows(out / "plots" / "knn" / "folk.csv") == [
        {"epoch": "1", "knn_top1": "30.0"},
        {"epoch": "2", "knn_top1": "45.0"},
    ]
    assert read_rows(out / "plots" / "knn" / "mfm.csv") == []  # header only: no k-NN record
    assert (out / "plots" / "knn" / "mfm.csv").read_text() == "epoch,knn_top1\n"

    metrics = json.loads((out / "metrics.json").read_text())
    knn = metrics["knn_linear"]
    folk_row = next(v for k, v in knn.items() if k.startswith("folk /"))
    random_row = next(v for k, v in knn.items() if k.startswith("random init"))
    assert 71.25 in folk_row.values() and 75.5 in folk_row.values()
    assert 20.5 in random_row.values()

    prov = json.loads((out / "provenance.json").read_text())
    assert prov["runs"] == 4 and prov["runs_git_shas"] == ["a" * 40]
    assert prov["machines"] == ["test"] and prov["devices"] == ["cpu (x86_64, 2 threads)"]
    assert len(prov["report_git_sha"]) in (40, len("unknown")) and prov["date"][:2] == "20"
    assert "knn_linear" in prov["tables_with_results"]


def test_default_out_dir_is_the_experiments_and_several_need_one(tmp_path, monkeypatch):
    runs = small_grid(tmp_path)
    monkeypatch.chdir(tmp_path)
    report = build_report(runs)
    assert report.out_dir == Path("results") / "demo"
    assert (tmp_path / "results" / "demo" / "README.md").is_file()
    write_run(tmp_path / "runs", "paper", "folk", "folk")
    with pytest.raises(ConfigError, match=r"2 experiments \(demo, paper\).*--runs"):
        build_report(tmp_path / "runs")
    build_report(tmp_path / "runs", tmp_path / "all")  # named: one report of both


def test_headline_block_replaces_the_readme_block_only(tmp_path):
    runs = small_grid(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    out = tmp_path / "results" / "demo"
    assert main(["report", "--runs", str(runs), "--out", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Project\n\nIntro.\n\n## Headline result\n\n" + HEADLINE_BEGIN)
    assert text.endswith(HEADLINE_END + "\n\n## Next\n") and "old" not in text
    block = text.split(HEADLINE_BEGIN)[1].split(HEADLINE_END)[0]
    # the table as its Markdown file has it, links relative to the README
    table_md = (out / "tables" / "knn_linear.md").read_text()
    # without the links of the tables' own file (relative to tables/, not to the README)
    table_lines = [
        re.sub(r"\[([^\]]*)\]\((?:\.\./runs/[^)]*)\)", r"\1", line)
        for line in table_md.splitlines()
        if line.startswith("|")
    ]
    assert table_lines and all(line in block.splitlines() for line in table_lines)
    assert "../runs/" not in block
    assert "(results/demo/figures/knn_epochs.png)" in block
    assert "(results/demo/README.md)" in block and "(results/demo/provenance.json)" in block
    # again: the same block, not a second one
    assert main(["report", "--runs", str(runs), "--out", str(out), "--readme", str(readme)]) == 0
    assert readme.read_text().count(HEADLINE_BEGIN) == 1


@pytest.mark.parametrize("text", ["# no block\n", f"{HEADLINE_BEGIN}\n{HEADLINE_END}\n" * 2])
def test_a_readme_without_one_block_fails_before_anything_is_written(tmp_path, text):
    runs = small_grid(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(text)
    out = tmp_path / "results"
    with pytest.raises(ConfigError, match="exactly one headline block"):
        build_report(runs, out, readme=readme)
    assert not out.exists() and readme.read_text() == text


def test_each_value_links_to_its_log_and_each_method_to_its_config(tmp_path):
    runs = small_grid(tmp_path)
    (runs / "folk" / "eval" / "knn" / "log.txt").write_text("k-NN of folk: top1_k20 71.25\n")
    out = tmp_path / "results"
    build_report(runs, out)
    md = (out / "tables" / "knn_linear.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| [folk]"))
    assert row.startswith("| [folk](../runs/folk/config.yaml) [")
    assert "[71.2](../runs/folk/eval/knn/log.txt)" in row  # as the table rounds it
    assert "[75.5](../runs/folk/eval/linear/metrics.json)" in row  # no log: its record
    # every link of the table resolves to a copied file
    for target in re.findall(r"\]\((\.\./runs/[^)]+)\)", md):
        # the fixture wrote one log only: the other evaluations' links name no file
        assert (out / "tables" / target).resolve().is_file() or "folk/eval/knn" not in target
    assert (out / "runs" / "folk" / "eval" / "knn" / "log.txt").read_text().startswith("k-NN")
    copied = (out / "runs" / "folk" / "config.yaml").read_text()
    assert copied == (runs / "folk" / "config.yaml").read_text()
    assert (out / "runs" / "folk" / "eval" / "knn" / "metrics.json").is_file()
    # a second report over fewer runs leaves nothing of the first behind
    import shutil

    shutil.rmtree(runs / "mfm")
    build_report(runs, out)
    assert not (out / "runs" / "mfm").exists()
