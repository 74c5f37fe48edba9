"""``folk bench``: throughput of pre-training steps, with a plain DINO step as the baseline
measured in the same process. Prints one JSON line per (variant, backbone).

Data are random tensors already on the device, so the figure is the step's own cost
without data loading, measured the same way for the DINO baseline.

``folk bench --data`` measures the input path instead (loader, step, and the two together,
against DINO's reference augmentation): ``folk.bench_data``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from folk.cli import add_config_arguments
from folk.utils.io import append_jsonl

BASELINE = "dino_2view"


def add_arguments(parser) -> None:
    add_config_arguments(parser, required=False)
    parser.add_argument("--variants", default="folk", help="comma-separated variant names")
    parser.add_argument("--archs", default="", help="comma-separated timm names "
                                                    "(default: the config's model.arch)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per step (default 128; with --data the config's "
                             "pretrain.batch_size)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument("--no-baseline", action="store_true", help="skip the DINO baseline")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="device peak, to report MFU (e.g. 989 for H100 dense bf16)")
    parser.add_argument("--out", help="append the JSON lines to this file too")
    data = parser.add_argument_group("the input path (--data; folk/bench_data.py)")
    data.add_argument("--data", action="store_true",
                      help="measure the loader on the config's dataset against DINO's "
                           "reference augmentation, the step, and the two together")
    data.add_argument("--rounds", type=int, default=12,
                      help="interleaved rounds of the loader pipelines (median taken)")
    data.add_argument("--images", type=int, default=32,
                      help="images per loader pipeline and round")
    data.add_argument("--iterations", type=int, default=10,
                      help="timed iterations of the whole path (0: skip it)")


def _sig(x: float) -> float:
    """Four significant digits: a CPU's TFLOP/s is small but must not round to zero."""
    return float(f"{x:.4g}")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_flops(step, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    _sync(device)
    return float(counter.get_total_flops())


def _step_setup(cfg: dict, batch: int, compile_: bool):
    """Networks, objective, optimiser and random views on the device, as training builds them."""
    import torch

    from folk.engine.pretrain import param_groups
    from folk.engine.step import FolkObjective
    from folk.models import build_student_teacher

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
    import torch

    from folk.data.photometric import draw_params
    from folk.data.transforms import PretrainViews, finish_views

    if cfg["augment"]["photometric"] != "device":
        return None
    made = PretrainViews(cfg)
    c, size = cfg["data"]["in_chans"], cfg["model"]["img_size"]
    gen = torch.Generator().manual_seed(0)
    crops = [torch.randint(0, 256, (batch, c, size, size), generator=gen,
                           dtype=torch.uint8).to(device) for _ in range(2)]
    rows = torch.stack([torch.stack([draw_params(spec, gen) for spec in made.specs[:2]])
                        for _ in range(batch)]).to(device)
    return lambda: finish_views(crops + [rows], made)


def measure(cfg: dict, batch: int, steps: int, warmup: int, compile_: bool) -> dict:
    import torch

    from folk.engine.pretrain import peak_memory_mb
    from folk.filters import apply_filter
    from folk.models import ema_update
    from folk.utils.provenance import device_name

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
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    step_s = (time.perf_counter() - t0) / steps
    peak_mb = peak_memory_mb(device)
    if compile_:  # the counter cannot see into compiled graphs: count an eager copy's step
        device, student, teacher, objective, opt, views, gen = _step_setup(cfg, batch, False)
    flops = _step_flops(step, device)

    n_masked = cfg["method"]["num_views"] * batch
    masked = torch.cat(views)[:n_masked]
    for _ in range(3):
        apply_filter(objective.filter_name, masked, generator=gen, **objective.filter_kwargs)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        apply_filter(objective.filter_name, masked, generator=gen, **objective.filter_kwargs)
    _sync(device)
    filter_s = (time.perf_counter() - t0) / steps
    return {"images_per_s": round(batch / step_s, 2), "step_time_ms": round(step_s * 1e3, 3),
            "tflops": _sig(flops / step_s / 1e12), "gflop_per_image": _sig(flops / batch / 1e9),
            "peak_memory_mb": round(peak_mb, 1),
            "filter_ms": round(filter_s * 1e3, 3),
            "filter_fraction": round(filter_s / step_s, 4), "device": device_name(),
            "dtype": str(objective.amp_dtype or "float32").replace("torch.", "")}


def run(args) -> int:
    from folk.config import load_config

    base_overrides = list(args.overrides)
    archs = [a for a in args.archs.split(",") if a] or [None]
    variants = [v for v in args.variants.split(",") if v]
    if args.data:
        return _run_data(args, variants, archs)
    if args.batch_size is None:
        args.batch_size = 128
    jobs = [(v, a, False) for a in archs for v in variants]
    if not args.no_baseline:
        jobs = [(BASELINE, a, True) for a in archs] + jobs
    # validate every configuration before the first (slow) measurement
    configs = []
    for variant, arch, baseline in jobs:
        overrides = base_overrides + [f"pretrain.variant={variant}"]
        if arch:
            overrides.append(f"model.arch={arch}")
        configs.append((variant, baseline, load_config(args.config, overrides)))
    out = Path(args.out) if args.out else None
    for variant, baseline, cfg in configs:
        record = {"type": "bench", "variant": variant, "arch": cfg["model"]["arch"],
                  "img_size": cfg["model"]["img_size"], "batch_size": args.batch_size,
                  "compile": args.compile, "baseline": baseline,
                  "photometric": cfg["augment"]["photometric"]}
        record.update(measure(cfg, args.batch_size, args.steps, args.warmup, args.compile))
        if args.peak_tflops:
            record["mfu"] = _sig(record["tflops"] / args.peak_tflops)
        print(json.dumps(record), flush=True)
        if out:
            append_jsonl(out, record)
        print(f"{variant:>22s} {record['arch']}: {record['images_per_s']:.1f} img/s, "
              f"{record['step_time_ms']:.1f} ms/step, {record['tflops']:.2f} TFLOP/s, "
              f"filter {100 * record['filter_fraction']:.2f} % of the step", file=sys.stderr)
    return 0


def _run_data(args, variants: list, archs: list) -> int:
    from folk.bench_data import run as run_data
    from folk.config import load_config
    from folk.errors import ConfigError

    if len(variants) != 1 or len(archs) != 1:
        raise ConfigError(f"--data measures one variant on one backbone (the loader does not "
                          f"depend on them), got --variants {args.variants!r} --archs "
                          f"{args.archs!r}")
    overrides = list(args.overrides) + [f"pretrain.variant={variants[0]}"]
    if archs[0]:
        overrides.append(f"model.arch={archs[0]}")
    return run_data(args, load_config(args.config, overrides))
