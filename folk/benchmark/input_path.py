"""Images/s of the pre-training input path on the config's dataset, as ``folk bench --data``
measures them, split so that it says what bounds a run: the loader, the step, or neither.

Measurements, one JSON line each (``"type": "bench_data"``, ``"measure"`` naming which):

``loader`` (one line per pipeline)
    Items made in this process on one core (``torch.set_num_threads(1)``, as a DataLoader
    worker runs), decode included: ``(epoch, index)`` keys through ``SeededViews`` over
    ``build_dataset(cfg, "train")``, batches of ``--batch-size`` put together by
    ``collate_skip_none``. Pipelines:

    - ``pretrain_views``: the project's own views, ``PretrainViews(cfg)``, exactly as
      training builds them; whatever that transform does per item is what is timed (with
      ``augment.photometric: device`` only the geometric part and the drawing of the
      photometric parameters run here, the rest on the device inside the step);
    - ``dino_reference``: DINO's two global views as its reference code makes them
      (``DataAugmentationDINO`` of facebookresearch/dino ``main_dino.py``): the classic
      ``torchvision.transforms`` on PIL images, ``RandomResizedCrop(model.img_size,
      scale=augment.crop_scale, bicubic)``, flip, ``ColorJitter(0.4, 0.4, 0.2, 0.1)`` with
      p 0.8, grayscale p 0.2, PIL Gaussian blur of radius U(0.1, 2) with p 1.0 (view 1) and
      0.1 (view 2), PIL solarisation with p 0.2 (view 2), ``ToTensor``, ``Normalize``;
    - ``mfm_reference``: MFM's ``MFMTransform`` (Jiahao000/MFM ``data/data_mfm.py``), one
      view: ``RandomResizedCrop(model.img_size, scale=(0.2, 1), bicubic)``, flip,
      ``ToTensor`` (its frequency mask is a precomputed array handed out as is: left out);
    - ``decode_crop``: the floor, decode and two views of ``RandomResizedCrop(..., bicubic)``
      + flip to uint8 tensors, nothing else.

    The rounds (``--rounds``, default 12, of ``--images``, default 32) run every pipeline
    once each, back to back on the same images, in an order rotated from round to round;
    each rate is the median over rounds. The ``pretrain_views`` line carries the
    comparison, paired by round (each round's ratio, then their median, so that a slow
    spell of a shared machine falls on both sides of a ratio): ``ratio_vs_dino`` (its
    images/s over DINO's: above 1, faster than DINO's reference) and
    ``time_vs_decode_crop`` (its ms per image over the floor's: how many times a bare
    decode and crop the workers spend per image).
``step``
    The pre-training step alone on random tensors on the device: what ``folk bench``
    measures (``folk.benchmark.step.measure``), same fields; with ``augment.photometric:
    device`` it begins with the batch's photometric work, as the training iteration does.
``whole``
    The real path: the engine's own data set, transform and collation in a
    ``torch.utils.data.DataLoader`` with ``data.num_workers`` workers (the engine's
    loader settings, over consecutive epochs so that no epoch boundary restarts the
    workers) feeding the engine's own iteration (``Pretrainer``) for ``--iterations``
    timed iterations. The first ``--warmup`` + workers x prefetch batches are not timed:
    they include the workers' start and the batches queued before timing began.
``summary``
    What bounds the run: ``loader_images_per_s`` = one core's rate x workers (the loader's
    capacity, if the machine has the cores), against ``step_images_per_s``; ``bound`` is
    the slower of the two, ``cores_to_feed_step`` how many loader cores the step would
    need to run at its own speed, ``whole_vs_bound`` the whole path's rate over the
    slower one's (near 1: the two account for the run). With ``num_workers: 0`` the loader
    runs in the training process between steps, so the two add up instead.

All images/s count source images (each makes ``views_per_image`` views). A human summary
goes to stderr; ``--out`` appends the JSON lines to a file, as ``folk bench`` does.

    folk prepare photos --config params/bench-photos.yaml     # JPEG photographs, offline
    folk bench --data --config params/bench-photos.yaml [--out runs/bench-photos/bench_data.jsonl]
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import ImageFilter, ImageOps
from torch.utils.data import DataLoader
from torchvision import transforms as T

from folk.benchmark.step import measure
from folk.benchmark.timing import synchronize
from folk.data import build_dataset, collate_skip_none
from folk.data import transforms as data_transforms
from folk.data.on_device import DeviceBatches
from folk.engine.data import EpochSampler, SeededViews
from folk.engine.device import autocast_dtype
from folk.engine.pretrain import Pretrainer
from folk.errors import DataError
from folk.recipes import patch_size_of
from folk.utils.provenance import device_name

PIPELINES = ("pretrain_views", "dino_reference", "mfm_reference", "decode_crop")
OURS = "pretrain_views"
MFM_CROP_SCALE = (0.2, 1.0)  # MFM's DATA.MIN_CROP_SCALE; its recipe, not the config's
LOADER_WARMUP_IMAGES = 8


# ------------------------------------------------------------------ reference pipelines


class DinoReference:
    """DINO's two global views, built the way its reference code builds them: the classic
    torchvision API on PIL images, blur and solarisation by PIL, Python's ``random`` for
    their coin flips. DINO's fixed parameters, except the view size and crop scale, which
    follow the config so that both sides make the same views."""

    blur_prob = (1.0, 0.1)
    solarize_prob = (0.0, 0.2)

    def __init__(self, cfg: dict):
        size, scale = cfg["model"]["img_size"], tuple(cfg["augment"]["crop_scale"])
        self.geometric = T.Compose(
            [
                T.RandomResizedCrop(size, scale=scale, interpolation=T.InterpolationMode.BICUBIC),
                T.RandomHorizontalFlip(p=0.5),
            ]
        )
        self.colour = T.Compose(
            [
                T.RandomApply(
                    [T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8
                ),
                T.RandomGrayscale(p=0.2),
            ]
        )
        self.to_tensor = T.Compose(
            [T.ToTensor(), T.Normalize(cfg["data"]["mean"], cfg["data"]["std"])]
        )

    def __call__(self, img):
        views = []
        for blur_p, solarize_p in zip(self.blur_prob, self.solarize_prob):
            view = self.colour(self.geometric(img))
            if random.random() < blur_p:
                view = view.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))
            if random.random() < solarize_p:
                view = ImageOps.solarize(view)
            views.append(self.to_tensor(view))
        return views


class MfmReference:
    """MFM's pre-training transform: one crop, flipped, as a float tensor."""

    n_views = 1

    def __init__(self, cfg: dict):
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(
                    cfg["model"]["img_size"],
                    scale=MFM_CROP_SCALE,
                    interpolation=T.InterpolationMode.BICUBIC,
                ),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
            ]
        )

    def __call__(self, img):
        return self.transform(img)


class DecodeCrop:
    """The least any two-view pipeline does after decoding: crop, resize, flip, to bytes."""

    n_views = 2

    def __init__(self, cfg: dict):
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(
                    cfg["model"]["img_size"],
                    scale=tuple(cfg["augment"]["crop_scale"]),
                    interpolation=T.InterpolationMode.BICUBIC,
                ),
                T.RandomHorizontalFlip(),
                T.PILToTensor(),
            ]
        )

    def __call__(self, img):
        return [self.transform(img) for _ in range(self.n_views)]


def build_pipelines(cfg: dict, dataset) -> dict:
    """pipeline name -> SeededViews over ``dataset``: every side pays the same per-item
    seeding and indexing, so that only the transforms differ."""
    seed = cfg["experiment"]["seed"]
    transforms = {
        OURS: data_transforms.PretrainViews(cfg),
        "dino_reference": DinoReference(cfg),
        "mfm_reference": MfmReference(cfg),
        "decode_crop": DecodeCrop(cfg),
    }
    return {name: SeededViews(dataset, t, seed) for name, t in transforms.items()}


def views_per_image(transform) -> int | None:
    n = getattr(transform, "n_views", None)
    if n is None and isinstance(transform, DinoReference):
        n = len(transform.blur_prob)
    return n


# ------------------------------------------------------------------ loader, one core


@contextlib.contextmanager
def one_core():
    """Torch on one thread, as in a DataLoader worker; the caller's count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def round_keys(n: int, images: int, seed: int, round_: int) -> list[tuple[int, int]]:
    """``images`` (epoch, index) keys in the engine sampler's order, continuing into the
    next epoch when the data set is smaller; each round has epochs of its own, so rounds
    make different views of the same images."""
    sampler = EpochSampler(n, n, 0, 1, seed)
    keys: list[tuple[int, int]] = []
    epoch = round_ * (images // n + 1)
    while len(keys) < images:
        sampler.set_epoch(epoch)
        keys.extend(list(sampler)[: images - len(keys)])
        epoch += 1
    return keys


def time_loader(views, keys, batch: int) -> tuple[float, int]:
    """(seconds, images kept) to make and collate the items of ``keys`` in batches."""
    kept = 0
    t0 = time.perf_counter()
    for start in range(0, len(keys), batch):
        chunk = keys[start : start + batch]
        _, labels, _ = collate_skip_none([views[k] for k in chunk])
        kept += len(labels)
    return time.perf_counter() - t0, kept


def measure_loaders(
    cfg: dict, dataset, batch: int, images: int, rounds: int, progress=None
) -> dict[str, dict]:
    """pipeline -> {images_per_s, ms_per_image, rounds_images_per_s, images} on one core."""
    say = progress or (lambda msg: None)
    pipelines = build_pipelines(cfg, dataset)
    names = list(pipelines)
    seed = cfg["experiment"]["seed"]
    rates: dict[str, list[float]] = {n: [] for n in names}
    with one_core():
        warm = round_keys(len(dataset), LOADER_WARMUP_IMAGES, seed, rounds)
        for name in names:  # first calls pay for imports and caches: not timed
            time_loader(pipelines[name], warm, batch)
        for r in range(rounds):
            keys = round_keys(len(dataset), images, seed, r)
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                random.seed(seed * 1009 + r)  # DINO's coin flips: the same in every run
                seconds, kept = time_loader(pipelines[name], keys, batch)
                if kept == 0:
                    raise DataError(f"no image of '{cfg['data']['root']}' could be decoded")
                rates[name].append(kept / seconds)
                say(f"  round {r + 1}/{rounds}: {name:>15s} {kept / seconds:8.1f} images/s")
    out = {}
    for name in names:
        rate = statistics.median(rates[name])
        out[name] = {
            "images_per_s": round(rate, 2),
            "per_core": round(rate, 2),
            "ms_per_image": round(1e3 / rate, 3),
            "rounds_images_per_s": [round(x, 2) for x in rates[name]],
            "images": images,
            "views_per_image": views_per_image(pipelines[name].transform),
        }
    out[OURS].update(paired_ratios(rates))
    return out


def paired_ratios(rates: dict[str, list[float]]) -> dict[str, float]:
    """Ours against DINO's reference and the decode + crop floor, round by round: the
    pipelines of one round run back to back on the same images, so a slow spell of the
    machine (a shared one has them) falls on both sides of each ratio; the median over
    rounds then drops the rounds it split."""
    ours = rates[OURS]
    return {
        "ratio_vs_dino": round(
            statistics.median(o / d for o, d in zip(ours, rates["dino_reference"])), 3
        ),
        "time_vs_decode_crop": round(
            statistics.median(f / o for o, f in zip(ours, rates["decode_crop"])), 3
        ),
    }


# ------------------------------------------------------------------ whole path


class _ConsecutiveEpochs:
    """The engine sampler's keys, epoch after epoch, ``total`` of them: the timed window
    never waits on an epoch boundary's new iterator and refilled prefetch queue."""

    def __init__(self, n: int, per_epoch: int, total: int, seed: int):
        self.sampler = EpochSampler(n, per_epoch, 0, 1, seed)
        self.total = total

    def __len__(self) -> int:
        return self.total

    def __iter__(self):
        epoch, given = 0, 0
        while given < self.total:
            self.sampler.set_epoch(epoch)
            for key in self.sampler:
                if given == self.total:
                    return
                yield key
                given += 1
            epoch += 1


def measure_whole(cfg: dict, batch: int, iterations: int, warmup: int, compile_: bool) -> dict:
    """The engine's loader feeding the engine's iteration, timed over ``iterations``."""
    cfg = copy.deepcopy(cfg)
    p = cfg["pretrain"]
    p.update(
        batch_size=batch,
        accum_steps=1,
        knn_every=0,
        compile="on" if compile_ else "off",
        max_iterations=0,
    )
    with tempfile.TemporaryDirectory(prefix="folk-bench-data-") as tmp:
        trainer = Pretrainer(cfg, Path(tmp))
        trainer.setup()
        engine = trainer.loader
        on_device = isinstance(engine, DeviceBatches)  # data.on_device: no workers, no queue
        queued = 0 if on_device else engine.num_workers * (engine.prefetch_factor or 0)
        untimed = warmup + queued
        n = len(engine.images) if on_device else len(engine.dataset)
        keys = _ConsecutiveEpochs(
            n,
            trainer.iters_per_epoch * batch,
            (untimed + iterations) * trainer.images_per_iter,
            cfg["experiment"]["seed"],
        )
        if on_device:
            engine.sampler = keys
            loader = engine
        else:
            loader = DataLoader(
                engine.dataset,
                batch_size=engine.batch_size,
                sampler=keys,
                num_workers=engine.num_workers,
                collate_fn=engine.collate_fn,
                pin_memory=engine.pin_memory,
                drop_last=False,
                generator=torch.Generator().manual_seed(0),
                prefetch_factor=engine.prefetch_factor,
            )
        # past the frozen-last-layer epochs: the optimiser updates every parameter
        epoch = math.ceil(p["freeze_last_layer_epochs"])
        device = trainer.device
        batches = iter(loader)
        try:
            for _ in range(untimed):
                micro = trainer._next_iteration(batches)
                if micro:  # empty when no image of the batch decoded, as in training
                    trainer._train_iteration(micro, epoch)
            synchronize(device)
            t0 = time.perf_counter()
            done = 0
            for _ in range(iterations):
                micro = trainer._next_iteration(batches)
                if micro:  # counted as the engine counts its images/s
                    trainer._train_iteration(micro, epoch)
                    done += trainer.images_per_iter
            synchronize(device)
            seconds = time.perf_counter() - t0
        finally:
            del batches  # stops the workers now, not at garbage collection
    return {
        "images_per_s": round(done / max(seconds, 1e-9), 2),
        "step_time_ms": round(seconds / iterations * 1e3, 3),
        "iterations": iterations,
        "untimed_iterations": untimed,
        "num_workers": 0 if on_device else engine.num_workers,
        "prefetch_factor": None if on_device else engine.prefetch_factor,
        "pin_memory": False if on_device else engine.pin_memory,
    }


# ------------------------------------------------------------------ summary


def summarise(
    loader_per_core: float, step_ips: float, whole_ips: float | None, workers: int
) -> dict:
    """What bounds the run (module docstring, ``summary``)."""
    if workers > 0:
        capacity = loader_per_core * workers
        expected = min(capacity, step_ips)
        bound = "loader" if capacity < step_ips else "step"
    else:  # one process alternates between making a batch and stepping on it
        capacity = loader_per_core
        expected = 1.0 / (1.0 / loader_per_core + 1.0 / step_ips)
        bound = "loader" if loader_per_core < step_ips else "step"
    out = {
        "loader_images_per_s": round(capacity, 2),
        "step_images_per_s": round(step_ips, 2),
        "bound": bound,
        "expected_images_per_s": round(expected, 2),
        "cores_to_feed_step": round(step_ips / loader_per_core, 2),
    }
    if whole_ips is not None:
        out["whole_images_per_s"] = whole_ips
        out["whole_vs_bound"] = round(whole_ips / expected, 3)
    return out


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ------------------------------------------------------------------ all of it


def measure_input_path(
    cfg: dict,
    *,
    batch: int,
    rounds: int,
    images: int,
    steps: int,
    warmup: int,
    iterations: int,
    compile_: bool,
    emit,
    say=None,
) -> None:
    """Every measure of the module docstring, for the config of one variant and backbone:
    ``emit(record)`` gets each JSON line as it is measured, ``say(text)`` the human account
    (none without it)."""
    say = say or (lambda msg: None)
    dataset = build_dataset(cfg, "train")  # fails at once, naming the path, when absent
    device = device_name()  # before any thread count changes: it names the count
    dtype = autocast_dtype(
        cfg["pretrain"]["amp"], torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    workers = cfg["data"]["num_workers"]
    common = {
        "type": "bench_data",
        "variant": cfg["pretrain"]["variant"],
        "arch": cfg["model"]["arch"],
        "img_size": cfg["model"]["img_size"],
        "patch_size": patch_size_of(cfg["model"]),
        "dataset": cfg["data"]["dataset"],
        "data_root": str(cfg["data"]["root"]),
        "dataset_images": len(dataset),
        "batch_size": batch,
        "photometric": cfg["augment"]["photometric"],
        "num_workers": workers,
        "cores": _cores(),
        "compile": compile_,
        "device": device,
        "dtype": str(dtype or "float32").replace("torch.", ""),
    }

    def line(record: dict) -> None:
        emit({**common, **record})

    say(
        f"folk bench --data: {common['dataset']} '{common['data_root']}' "
        f"({len(dataset)} images), {common['img_size']} px, batch {batch}, photometric on "
        f"{common['photometric']}; loader on one core, {rounds} rounds of "
        f"{images} images"
    )
    loaders = measure_loaders(cfg, dataset, batch, images, rounds, say)
    ours, dino, floor = loaders[OURS], loaders["dino_reference"], loaders["decode_crop"]
    for name in PIPELINES:
        record = {"measure": "loader", "pipeline": name, **loaders[name]}
        if name == OURS:
            record.update(
                dino_per_core=dino["per_core"],
                mfm_per_core=loaders["mfm_reference"]["per_core"],
                decode_crop_per_core=floor["per_core"],
            )
        line(record)

    say(f"step alone ({common['variant']}, {common['arch']}): {steps} steps of {batch}")
    step = measure(cfg, batch, steps, warmup, compile_)
    step.pop("device", None)  # named once in every line, before the thread count changed
    line({"measure": "step", **step})

    whole = None
    if iterations:
        say(f"whole path: {workers} worker(s) feeding the step, {iterations} iterations")
        whole = measure_whole(cfg, batch, iterations, warmup, compile_)
        line({"measure": "whole", **whole})

    summary = summarise(
        ours["per_core"], step["images_per_s"], whole["images_per_s"] if whole else None, workers
    )
    line({"measure": "summary", **summary})
    _print_summary(say, loaders, step, whole, summary, workers, common["cores"])


def _print_summary(say, loaders, step, whole, summary, workers, cores) -> None:
    ours, dino = loaders[OURS], loaders["dino_reference"]
    mfm, floor = loaders["mfm_reference"], loaders["decode_crop"]
    say(
        "loader, one core (median of rounds; images/s, ms per image; ratios: median of "
        "the rounds' ratios):"
    )
    for name, label in (
        (OURS, "ours (PretrainViews)"),
        ("dino_reference", "DINO reference"),
        ("mfm_reference", "MFM reference"),
        ("decode_crop", "decode + crop"),
    ):
        r = loaders[name]
        say(
            f"  {label:>22s} {r['per_core']:9.1f} {r['ms_per_image']:9.2f}"
            f"   (views per image: {r['views_per_image']})"
        )
    say(
        f"  ours / DINO: {ours['ratio_vs_dino']:.2f}x the images/s; "
        f"ours / decode + crop: {ours['time_vs_decode_crop']:.2f}x the time "
        f"per image (MFM {mfm['ms_per_image'] / floor['ms_per_image']:.2f}x, DINO "
        f"{dino['ms_per_image'] / floor['ms_per_image']:.2f}x)"
    )
    say(f"step alone: {step['images_per_s']:.1f} images/s ({step['step_time_ms']:.1f} ms/step)")
    if whole:
        say(
            f"whole path, {workers} worker(s): {whole['images_per_s']:.1f} images/s "
            f"({summary['whole_vs_bound']:.2f}x the expected {summary['expected_images_per_s']:.1f})"
        )
    where = f"{workers} worker(s)" if workers else "in the training process"
    say(
        f"bound: {summary['bound']} (loader {summary['loader_images_per_s']:.1f} images/s "
        f"with {where}, step {summary['step_images_per_s']:.1f}); feeding the step at its "
        f"speed takes {summary['cores_to_feed_step']:.1f} loader cores"
    )
    if workers + 1 > cores:
        say(
            f"note: {workers} worker(s) and the training process share {cores} core(s): the "
            "whole path competes for them, the loader's capacity assumes it does not"
        )
