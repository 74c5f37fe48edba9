"""The evaluation protocol beside each table (folk.report.protocol): the settings of the
tasks that fill it, read from the configs of the runs behind its rows; a setting on which
the runs differ shows each value; a table without runs states the defaults as such."""

from __future__ import annotations

from folk.cli import main
from report_fixtures import DEMO, write_run


def test_protocol_lines_come_from_the_runs_configs(tmp_path):
    runs = tmp_path / "runs"
    write_run(
        runs,
        "demo",
        "folk",
        "folk",
        [*DEMO, "eval.knn.k=[5, 20]", "eval.train_subset=300"],
        evals={"knn": ({"top1_k20": 71.25}, "top1_k20"), "linear": ({"top1": 75.5}, "top1")},
    )
    write_run(
        runs,
        "demo",
        "mfm",
        "mfm",
        [*DEMO, "eval.knn.k=[5, 20]", "eval.knn.temperature=0.1"],
        evals={"knn": ({"top1_k20": 62.0}, "top1_k20")},
    )
    # a seed sibling: the table's folk row is the merged run "folk;folk-seed1", whose
    # settings the protocol states (not the defaults'; k = [10, 20, 100, 200] there)
    write_run(
        runs,
        "demo",
        "folk-seed1",
        "folk",
        [*DEMO, "eval.knn.k=[5, 20]", "eval.train_subset=300", "experiment.seed=1"],
        evals={"knn": ({"top1_k20": 70.25}, "top1_k20"), "linear": ({"top1": 74.5}, "top1")},
    )
    out = tmp_path / "results"
    assert main(["report", "--runs", str(runs / "demo"), "--out", str(out)]) == 0
    md = (out / "tables" / "knn_linear.md").read_text()
    head = md.split("| method")[0]  # the protocol stands before the table
    assert "70.8 ± 0.7" in md  # the folk row is the mean of the two seeds
    assert "Protocol (from the runs' config.yaml):" in head
    knn = next(line for line in head.splitlines() if line.startswith("- knn: "))
    assert "`eval.knn.k` = `[5, 20]`" in knn  # one value: the runs agree
    # they differ: both, in the order of the table's rows (mfm's row stands above folk's)
    assert "`eval.knn.temperature` = `0.1` \\| `0.07`" in knn
    assert "`eval.feature_source` = `teacher`" in knn
    # the labelled images: folk's 300 (eval.train_subset), mfm's those it pre-trained on
    # (data.train_subset 0, the whole split)
    assert "`eval.train_subset` = `0` \\| `300`" in knn
    linear = next(line for line in head.splitlines() if line.startswith("- linear: "))
    assert "`eval.linear.lrs`" in linear and "eval.knn" not in linear
    data = next(line for line in head.splitlines() if line.startswith("- data: "))
    assert "`model.img_size` = `32`" in data and "`data.train_subset`" in data
    csv_text = (out / "tables" / "knn_linear.csv").read_text()
    assert "# Protocol (from the runs' config.yaml):" in csv_text
    # no run yet: the defaults, said to be the defaults
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", "--runs", str(empty), "--out", str(tmp_path / "none")]) == 0
    seg = (tmp_path / "none" / "tables" / "segmentation.md").read_text()
    assert "Protocol (from the defaults (no run yet)):" in seg
    assert "`eval.segmentation.head` = `upernet`" in seg
    # the compute table is fed by no evaluation: no protocol line
    assert "Protocol" not in (out / "tables" / "compute.md").read_text()
