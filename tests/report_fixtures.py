"""Fixture run directories for the report tests, written exactly as DESIGN.md's contracts say
(config.yaml from folk.config, metrics.jsonl records, DONE.json, eval/<task>/metrics.json),
with synthetic numbers chosen so that each one can be looked up in the report's output."""

from __future__ import annotations

import json
from pathlib import Path

from folk.config import load_config, save_config

DEMO = [
    "data.dataset=fashion_mnist",
    "data.num_classes=10",
    "model.arch=vit_tiny_patch16_224",
    "model.img_size=32",
    "model.patch_size=4",
    "pretrain.epochs=5",
    "experiment.dataset_note=Fashion-MNIST demo, 2000 images",
]
IN1K = ["data.dataset=imagenet", "model.arch=vit_small_patch16_224", "pretrain.epochs=300"]
DEMO_DEVICE = "cpu (x86_64, 2 threads)"


def write_run(
    root: Path,
    experiment: str,
    dirname: str,
    variant: str,
    overrides=(),
    run_name: str | None = None,
    ablation: str = "",
    done: dict | None | bool = True,
    evals: dict | None = None,
    records: list[dict] | None = None,
) -> Path:
    """One run directory ``root/experiment/dirname``; ``evals`` maps ``task`` or
    ``task-variant`` to ``(metrics, primary)`` or ``(metrics, primary, dataset, epochs)``."""
    run_dir = root / experiment / dirname
    run_dir.mkdir(parents=True)
    cfg = load_config(
        None,
        [
            f"experiment.name={experiment}",
            f"experiment.run_name={run_name or dirname}",
            f"experiment.ablation={ablation}",
            f"pretrain.variant={variant}",
            *overrides,
        ],
    )
    save_config(cfg, run_dir / "config.yaml")
    with open(run_dir / "metrics.jsonl", "w") as f:
        for rec in records or []:
            f.write(json.dumps(rec) + "\n")
    if done:
        record = {
            "git_sha": "a" * 40,
            "git_dirty": False,
            "versions": {},
            "device": DEMO_DEVICE,
            "world_size": 1,
            "wall_time_s": 3600.0,
            "images_per_s": 100.0,
            "peak_memory_mb": 512.0,
            "skipped_images": 0,
            "iterations": 10,
            "epochs": 5,
            "final_loss": 1.0,
            "hostname": "test",
            "finished_at": "2026-01-01T00:00:00+00:00",
        }
        if isinstance(done, dict):
            record.update(done)
        (run_dir / "DONE.json").write_text(json.dumps(record))
    for key, spec in (evals or {}).items():
        task, _, task_variant = key.partition("-")
        metrics, primary, *rest = spec
        dataset = rest[0] if rest else cfg["data"]["dataset"]
        epochs = rest[1] if len(rest) > 1 else 0
        out = run_dir / "eval" / key
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(
            json.dumps(
                {
                    "schema": "folk.eval/1",
                    "run": cfg["experiment"]["run_name"],
                    "run_dir": str(run_dir),
                    "task": task,
                    "variant": task_variant,
                    "dataset": dataset,
                    "split": "test",
                    "metrics": metrics,
                    "primary": primary,
                    "seed": 0,
                    "epochs": epochs,
                    "git_sha": "b" * 40,
                    "wall_time_s": 360.0,
                    "finished_at": "2026-01-02T00:00:00+00:00",
                }
            )
        )
    return run_dir


def loss_records(
    start: float, slope: float, epochs: int = 3, per_epoch: int = 2, kd: bool = False
) -> list[dict]:
    """Train and epoch records of falling losses; with ``kd``, the distillation diagnostics
    too: a falling teacher entropy and KL."""
    out, it = [], 0
    for e in range(epochs):
        for _ in range(per_epoch):
            it += 1
            rec = {
                "type": "train",
                "epoch": e,
                "iteration": it,
                "loss": start - slope * it,
                "loss_rec": start - slope * it,
                "lr": 1e-3,
                "images_per_s": 100.0,
            }
            if kd:
                rec.update(kd_teacher_entropy=4.85 - 0.5 * it, kd_kl=1.0 / it)
            out.append(rec)
        out.append(
            {
                "type": "epoch",
                "epoch": e + 1,
                "loss": start - slope * it,
                "loss_rec": start - slope * it,
            }
        )
    return out


def knn_records(values: list[float]) -> list[dict]:
    return [
        {"type": "knn", "epoch": e + 1, "iteration": 2 * (e + 1), "knn_top1": v, "k": 20}
        for e, v in enumerate(values)
    ]


# metric names as folk.evals.fewshot and folk.evals.robustness write them
FEWSHOT = {
    "frac1pct_top1_mean": 40.0,
    "frac1pct_top1_std": 1.5,
    "frac10pct_top1_mean": 55.25,
    "frac10pct_top1_std": 0.75,
    "shot1_top1_mean": 30.0,
    "shot1_top1_std": 2.0,
    "shot5_top1_mean": 50.0,
    "shot5_top1_std": 1.0,
    "shot5_top5_mean": 90.0,
    "file_logreg_top1_mean": 45.0,
    "file_logreg_top1_std": 0.0,
}
ROBUSTNESS = {
    "mean_corruption_top1": 60.5,
    "clean_top1": 79.0,
    "gaussian_noise_s1_top1": 70.0,
    "gaussian_noise_s3_top1": 60.0,
    "gaussian_noise_mean_top1": 65.0,
    "jpeg_s1_top1": 58.0,
    "jpeg_s3_top1": 54.0,
    "jpeg_mean_top1": 56.0,
    "lowpass_r4_top1": 50.0,
    "highpass_r4_top1": 20.0,
    "lowpass_r16_top1": 75.0,
}


def build_runs(root: Path) -> Path:
    """The fixture grid: a complete demo run, partial ones, an unfinished one, ablation sweeps
    (directory names deliberately unrelated to the values they vary), an ImageNet-scale run
    and a ResNet-50 run, plus bench results."""
    root.mkdir(parents=True, exist_ok=True)
    write_run(
        root,
        "demo",
        "folk",
        "folk",
        DEMO,
        done={
            "world_size": 2,
            "wall_time_s": 7200.0,
            "images_per_s": 250.5,
            "peak_memory_mb": 1234.0,
        },
        evals={
            "knn": ({"top1_k10": 70.0, "top1_k20": 71.25}, "top1_k20"),
            "linear": ({"top1": 75.5, "best_lr": 0.01}, "top1"),
            "finetune": ({"top1": 80.125}, "top1", "fashion_mnist", 10),
            "fewshot": (FEWSHOT, "shot5_top1_mean"),
            "segmentation": (
                {"miou": 33.375, "pixel_acc": 80.5},
                "miou",
                "fashion_mnist_composite",
            ),
            "robustness": (ROBUSTNESS, "mean_corruption_top1"),
        },
        records=loss_records(2.0, 0.1, kd=True) + knn_records([30.0, 45.0, 60.0]),
    )
    write_run(
        root,
        "demo",
        "mfm",
        "mfm",
        DEMO,
        evals={"knn": ({"top1_k20": 62.0}, "top1_k20")},  # no linear: partial
        records=loss_records(3.0, 0.05) + knn_records([25.0, 35.0, 50.0]),
    )
    write_run(
        root,
        "demo",
        "mfm_comrcom",
        "mfm_comrcom",
        DEMO,
        done=False,  # unfinished
        evals={"knn": ({"top1_k20": 65.0}, "top1_k20")},
        records=loss_records(2.5, 0.1),
    )
    write_run(
        root,
        "demo",
        "folk_no_rec",
        "folk_no_rec",
        DEMO,
        evals={
            "knn": ({"top1_k20": 63.5}, "top1_k20"),
            "linear": ({"top1": 66.0}, "top1"),
            "robustness": (
                {"mean_corruption_top1": 50.0, "clean_top1": 70.0, "highpass_r16_top1": 10.0},
                "mean_corruption_top1",
            ),
        },
    )
    write_run(
        root,
        "demo",
        "folk_mfm_filters",
        "folk_mfm_filters",
        DEMO,
        evals={"linear": ({"top1": 64.0}, "top1")},
    )
    write_run(root, "demo", "dino_2view", "dino_2view", DEMO)  # nothing evaluated
    # ablations: the values come from the config, never from these directory names
    write_run(
        root,
        "demo",
        "sweep_a",
        "folk",
        DEMO + ["filter.p_com=0.25"],
        ablation="p_com",
        evals={"knn": ({"top1_k20": 68.0}, "top1_k20")},
    )
    write_run(
        root,
        "demo",
        "sweep_b",
        "folk",
        DEMO + ["filter.p_com=0.75"],
        ablation="p_com",
        evals={"knn": ({"top1_k20": 69.5}, "top1_k20"), "linear": ({"top1": 70.0}, "top1")},
    )
    write_run(
        root,
        "demo",
        "sweep_c",
        "folk",
        DEMO + ["filter.portions=[0.01]"],
        ablation="portions",
        evals={"knn": ({"top1_k20": 66.0}, "top1_k20")},
    )
    write_run(
        root,
        "demo",
        "sweep_d",
        "folk",
        DEMO + ["pretrain.lambda_rec=1.0", "pretrain.lambda_kd=0.5"],
        ablation="loss_weights",
        evals={"knn": ({"top1_k20": 67.0}, "top1_k20")},
    )
    write_run(
        root,
        "demo",
        "sweep_e",
        "folk",
        DEMO + ["pretrain.epochs=2"],
        ablation="epochs",
        evals={"knn": ({"top1_k20": 55.0}, "top1_k20")},
    )
    write_run(
        root,
        "demo",
        "sweep_f",
        "folk",
        DEMO + ["augment.flip_prob=0.0"],
        ablation="augment",
        evals={"knn": ({"top1_k20": 64.0}, "top1_k20")},
    )
    # paper scale
    write_run(
        root,
        "in1k",
        "folk",
        "folk",
        IN1K,
        done={"device": "NVIDIA H100 80GB HBM3", "world_size": 16, "wall_time_s": 36000.0},
        evals={"finetune": ({"top1": 82.5}, "top1", "imagenet", 200)},
    )
    write_run(
        root,
        "in1k_r50",
        "folk",
        "folk",
        ["data.dataset=imagenet", "model.arch=resnet50"],
        evals={
            "finetune": ({"top1": 79.0}, "top1", "imagenet", 100),
            "knn": ({"top1_k20": 60.0}, "top1_k20"),
        },
    )
    with open(root / "demo" / "bench.jsonl", "w") as f:
        for variant, arch, ips in (
            ("folk", "vit_tiny_patch16_224", 900.0),
            ("dino_2view_plain", "vit_tiny_patch16_224", 1000.0),
            ("folk", "vit_small_patch16_224", 400.0),
        ):
            f.write(
                json.dumps(
                    {
                        "type": "bench",
                        "variant": variant,
                        "arch": arch,
                        "img_size": 224,
                        "batch_size": 8,
                        "device": "cpu",
                        "dtype": "fp32",
                        "compile": False,
                        "images_per_s": ips,
                        "step_time_ms": 8000 / ips,
                        "tflops": 0.1,
                        "peak_memory_mb": 100.0,
                        "filter_ms": 1.0,
                        "filter_fraction": 0.01,
                        "baseline": variant == "dino_2view_plain",
                    }
                )
                + "\n"
            )
    common = {
        "type": "bench_data",
        "variant": "folk",
        "arch": "vit_tiny_patch16_224",
        "img_size": 224,
        "dataset": "imagefolder",
        "data_root": "data/photos",
        "num_workers": 2,
        "device": "cpu",
        "dtype": "fp32",
        "compile": False,
    }
    with open(root / "demo" / "bench_data.jsonl", "w") as f:
        for line in (
            {"measure": "loader", "pipeline": "pretrain_views", "per_core": 40.0},
            {"measure": "loader", "pipeline": "dino_reference", "per_core": 50.0},
            {"measure": "loader", "pipeline": "decode_crop", "per_core": 120.0},
            {"measure": "step", "images_per_s": 900.0},
            {"measure": "whole", "images_per_s": 78.0},
            {
                "measure": "summary",
                "loader_images_per_s": 80.0,
                "step_images_per_s": 900.0,
                "bound": "loader",
            },
        ):
            f.write(json.dumps({**common, **line}) + "\n")
    return root
