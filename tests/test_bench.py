"""`folk bench` on the CPU path: one JSON line per variant, the DINO baseline measured first."""
from __future__ import annotations

import json

from folk.cli import main

TINY = ["model.arch=vit_tiny_patch16_224", "model.img_size=32", "model.patch_size=8",
        "model.depth=1", "model.embed_dim=32", "model.num_heads=2", "model.head_out_dim=64",
        "model.head_hidden_dim=32", "model.head_bottleneck_dim=16", "filter.mfm_radius=16"]


def test_bench_prints_figures_with_baseline(tmp_path, capsys):
    out = tmp_path / "bench.jsonl"
    args = ["bench", "--variants", "folk,mfm", "--batch-size", "4", "--steps", "2",
            "--warmup", "1", "--peak-tflops", "1.0", "--out", str(out)]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    printed = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert [r["variant"] for r in printed] == ["dino_2view", "folk", "mfm"]
    assert [r["baseline"] for r in printed] == [True, False, False]
    for r in printed:
        assert r["type"] == "bench" and r["images_per_s"] > 0 and r["step_time_ms"] > 0
        assert r["tflops"] > 0 and r["gflop_per_image"] > 0 and r["peak_memory_mb"] > 0
        assert 0 <= r["filter_fraction"] < 1 and r["mfu"] == r["tflops"]
        assert abs(r["images_per_s"] * r["step_time_ms"] / 1e3 - 4) < 0.05
    # two student views with backward and two teacher views cost more than one student view
    by = {r["variant"]: r for r in printed}
    assert by["folk"]["gflop_per_image"] > by["mfm"]["gflop_per_image"]
    assert [json.loads(l) for l in out.read_text().splitlines()] == printed


def test_bench_rejects_bad_config_before_measuring(capsys):
    assert main(["bench", "--variants", "folk,nope", "--set", "model.img_size=32"]) == 2
    assert "pretrain.variant" in capsys.readouterr().err
