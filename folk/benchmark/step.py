"""Throughput of pre-training steps, with a plain DINO step (``BASELINE``) as the baseline
measured in the same process: ``folk bench``'s figures, one record per (variant, backbone).

Data are random tensors already on the device, so the figure is the step's own cost
without data loading, measured the same way for the DINO baseline.

``folk bench --data`` measures the input path instead (loader, step, and the two together,
against DINO's reference augmentation): ``folk.benchmark.input_path``.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from folk.benchmark.timing import synchronize
from folk.data import transforms as data_transforms
from folk.data.photometric import draw_params
from folk.engine.pretrain import param_groups, peak_memory_mb
from folk.engine.step import FolkObjective
from folk.models import build_student_teacher, ema_update
from folk.recipes import patch_size_of
from folk.utils.provenance import device_name

BASELINE = "dino_2view"


def _sig(x: float) -> float:
    """Four significant digits: a CPU's TFLOP/s is small but must not round to zero."""
    return float(f"{x:.4g}")


def _step_flops(step, device) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    synchronize(device)
    return float(counter.get_total_flops())


def _step_setup(cfg: dict, batch: int, compile_: bool):
    """Networks, objective, optimiser and random views on the device, as training builds them."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    student, teacher = build_student_teacher(cfg)
    student.to(device)
    if teacher is not None:
        teacher.to(device)
    objective = FolkObjective(cfg, student, teacher, device)
    if compile_:
        objective.student = torch.compile(student)
        if teacher is not None:
            objective.teacher = torch.compile(teacher)
    opt = torch.optim.AdamW(param_groups(student), lr=1e-4, fused=device.type == "cuda" or None)
    c, size = cfg["data"]["in_chans"], cfg["model"]["img_size"]
    views = [torch.rand(batch, c, size, size, device=device) for _ in range(2)]
    gen = torch.Generator(device=device).manual_seed(0)
    return device, student, teacher, objective, opt, views, gen


def _device_augmentation(cfg: dict, batch: int, device):
    """With ``augment.photometric: device`` the step starts with the batch's photometric
    work: a function turning the loader's uint8 crops and parameter rows into the step's
    views, timed with it; None when the workers do that work."""
    if cfg["augment"]["photometric"] != "device":
        return None
    made = data_transforms.PretrainViews(cfg)
    c, size = cfg["data"]["in_chans"], cfg["model"]["img_size"]
    gen = torch.Generator().manual_seed(0)
    crops = [
        torch.randint(0, 256, (batch, c, size, size), generator=gen, dtype=torch.uint8).to(device)
        for _ in range(2)
    ]
    rows = torch.stack(
        [torch.stack([draw_params(spec, gen) for spec in made.specs[:2]]) for _ in range(batch)]
    ).to(device)
    return lambda: data_transforms.finish_views(crops + [rows], made)


def measure(cfg: dict, batch: int, steps: int, warmup: int, compile_: bool) -> dict:
    device, student, teacher, objective, opt, views, gen = _step_setup(cfg, batch, compile_)

    augment = _device_augmentation(cfg, batch, device)

    def step() -> None:
        loss, _ = objective(augment() if augment else views, 0.04, gen)
        objective.apply_center_update()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 3.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if teacher is not None:
            ema_update(teacher, student, 0.996)

    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    step_s = (time.perf_counter() - t0) / steps
    peak_mb = peak_memory_mb(device)
    if compile_:  # the counter cannot see into compiled graphs: count an eager copy's step
        device, student, teacher, objective, opt, views, gen = _step_setup(cfg, batch, False)
    flops = _step_flops(step, device)

    n_masked = cfg["method"]["num_views"] * batch
    masked = torch.cat(views)[:n_masked]
    for _ in range(3):
        objective.filter(masked, generator=gen, **objective.filter_kwargs)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        objective.filter(masked, generator=gen, **objective.filter_kwargs)
    synchronize(device)
    filter_s = (time.perf_counter() - t0) / steps
    return {
        "images_per_s": round(batch / step_s, 2),
        "step_time_ms": round(step_s * 1e3, 3),
        "tflops": _sig(flops / step_s / 1e12),
        "gflop_per_image": _sig(flops / batch / 1e9),
        "peak_memory_mb": round(peak_mb, 1),
        "filter_ms": round(filter_s * 1e3, 3),
        "filter_fraction": round(filter_s / step_s, 4),
        "device": device_name(),
        "dtype": str(objective.amp_dtype or "float32").replace("torch.", ""),
    }


def step_record(
    cfg: dict,
    variant: str,
    baseline: bool,
    *,
    batch: int,
    steps: int,
    warmup: int,
    compile_: bool,
    peak_tflops: float = 0.0,
) -> dict:
    """One ``folk bench`` line (``"type": "bench"``): what was measured, then ``measure``'s
    figures; with the device's peak TFLOP/s, the model FLOPs utilisation ``mfu`` too."""
    record = {
        "type": "bench",
        "variant": variant,
        "arch": cfg["model"]["arch"],
        "img_size": cfg["model"]["img_size"],
        "patch_size": patch_size_of(cfg["model"]),
        "batch_size": batch,
        "compile": compile_,
        "baseline": baseline,
        "photometric": cfg["augment"]["photometric"],
    }
    record.update(measure(cfg, batch, steps, warmup, compile_))
    if peak_tflops:
        record["mfu"] = _sig(record["tflops"] / peak_tflops)
    return record
