"""Semantic segmentation evaluation: UperNet fine-tuning (BEiT/MAE protocol) or a linear head
on a frozen backbone, trained on the ``training`` split and measured once, single-scale
with sliding windows, on ``validation`` (mIoU, pixel accuracy).

Reference: ``miou_majority``/``pixel_acc_majority`` are the same metrics of the constant
prediction of the training split's most frequent labelled class at every validation pixel
(ties to the lower class index), counted with the same ignore index and mIoU definition.

``eval.segmentation.dataset`` names the data in metrics.json: ``ade20k`` or
``fashion_mnist_composite`` (both read from ``eval.segmentation.root`` in the ADE20K layout).
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from folk.data.segmentation import (
    COMPOSITE_NUM_CLASSES,
    ADE20KSegmentation,
    SegEvalTransform,
    SegTrainTransform,
    check_ade20k_layout,
    reduce_zero_label,
)
from folk.engine.checkpoint import StateFile, rng_state, set_rng_state
from folk.engine.device import autocast, autocast_dtype, training_device
from folk.engine.hooks import Boundary, Hook, call_hooks
from folk.errors import ConfigError, DataError, NonFiniteLossError
from folk.evals.upernet import build_segmenter
from folk.models import inference_layout, is_resnet, load_backbone
from folk.utils.progress import progress
from folk.utils.seeding import key_seed, seeded_cpu_rng

CHECKPOINT = "checkpoint.pt"
LOG_EVERY = 50
WARMUP_RATIO = 1e-6  # lr at iteration 0 relative to the poly schedule (mmseg)
POLY_POWER = 1.0


# ---------------------------------------------------------------- checks (before any model)


def check_config(cfg: dict) -> None:
    """Rules tying eval.segmentation keys to each other and to the run."""
    seg, model = cfg["eval"]["segmentation"], cfg["model"]
    key = "eval.segmentation"
    if seg["ignore_index"] < seg["num_classes"]:
        raise ConfigError(
            f"key '{key}.ignore_index' = {seg['ignore_index']} is a class index "
            f"(num_classes = {seg['num_classes']}); it must be >= num_classes"
        )
    if seg["stride"] > seg["crop_size"]:
        raise ConfigError(
            f"key '{key}.stride' = {seg['stride']} exceeds crop_size = "
            f"{seg['crop_size']}: sliding windows would leave gaps"
        )
    if not is_resnet(model["arch"]) and seg["output_stride"] != 32:
        raise ConfigError(
            f"key '{key}.output_stride' = {seg['output_stride']} applies to ResNet "
            f"backbones only (a ViT's is its patch size); the run's model.arch is "
            f"{model['arch']!r}"
        )
    if not is_resnet(model["arch"]) and seg["crop_size"] % model["patch_size"] != 0:
        raise ConfigError(
            f"key '{key}.crop_size' = {seg['crop_size']} is not a multiple of the "
            f"run's model.patch_size = {model['patch_size']}"
        )
    if seg["head"] == "upernet" and seg["batch_size"] < 2:
        raise ConfigError(
            f"key '{key}.batch_size' = {seg['batch_size']}: UperNet's BatchNorm "
            f"layers need at least 2 crops per batch"
        )
    if seg["dataset"] == "fashion_mnist_composite" and seg["num_classes"] != COMPOSITE_NUM_CLASSES:
        raise ConfigError(
            f"key '{key}.num_classes' = {seg['num_classes']}: the Fashion-MNIST "
            f"composite has {COMPOSITE_NUM_CLASSES} classes (background + 10)"
        )


def check_data(seg: dict) -> dict:
    """Layout of the dataset root (structure only; ``folk prepare`` decoded every file)."""
    root = Path(seg["root"])
    if not root.is_dir():
        raise DataError(
            f"eval.segmentation.root = {root}: not found; prepare the "
            f"{seg['dataset']} set first (folk prepare)"
        )
    info = check_ade20k_layout(root, seg["num_classes"], decode=False)
    manifest = root / "manifest.json"
    if manifest.is_file():
        declared = json.loads(manifest.read_text()).get("num_classes")
        if declared is not None and declared != seg["num_classes"]:
            raise ConfigError(
                f"key 'eval.segmentation.num_classes' = {seg['num_classes']} but "
                f"{manifest} declares {declared} classes"
            )
    return info


# ---------------------------------------------------------------- optimisation

VIT_EMBEDDINGS = ("cls_token", "reg_token", "pos_embed", "patch_embed", "norm_pre")


def vit_layer_id(name: str, depth: int) -> int:
    """BEiT's layer numbering: embeddings 0, block i -> i + 1, anything after the blocks
    (final norm) depth + 1, the level of the segmentation heads."""
    if name.startswith(VIT_EMBEDDINGS):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(model: torch.nn.Module, resnet: bool, seg: dict) -> list[dict]:
    """AdamW groups carrying an ``lr_scale``.

    ViT backbone: layer-wise decay as in BEiT's segmentation fine-tuning, scale
    ``layer_decay ** (depth + 1 - layer_id)``, so the last block gets one factor of decay
    and the heads none (timm's ``param_groups_layer_decay`` merges the final norm into the
    last block and gives it 1.0, which is not the protocol). ResNet backbone and heads: 1.0.
    No weight decay on 1-D parameters (biases, norms) nor on the ViT's position embedding
    and tokens."""
    backbone = model.backbone
    skip = set(backbone.no_weight_decay()) if hasattr(backbone, "no_weight_decay") else set()
    depth = 0 if resnet else len(backbone.blocks)
    backbone_ids = {id(p) for p in backbone.parameters()}
    named = [(f"backbone.{n}", n, p) for n, p in backbone.named_parameters()]
    named += [(n, None, p) for n, p in model.named_parameters() if id(p) not in backbone_ids]
    groups: dict[tuple[float, float], list] = {}
    for _, backbone_name, p in named:
        if not p.requires_grad:
            continue
        if backbone_name is not None and not resnet:
            scale = seg["layer_decay"] ** (depth + 1 - vit_layer_id(backbone_name, depth))
        else:
            scale = 1.0
        no_decay = p.ndim <= 1 or (backbone_name is not None and backbone_name in skip)
        wd = 0.0 if no_decay else seg["weight_decay"]
        groups.setdefault((scale, wd), []).append(p)
    return [
        {"params": ps, "lr_scale": scale, "weight_decay": wd} for (scale, wd), ps in groups.items()
    ]


def lr_factor(iteration: int, total: int, warmup: int) -> float:
    """mmseg's schedule: poly decay (power 1) to 0 over all iterations, multiplied during
    the first ``warmup`` iterations by a linear ramp from WARMUP_RATIO to 1."""
    factor = (1 - iteration / total) ** POLY_POWER
    if iteration < warmup:
        factor *= 1 - (1 - iteration / warmup) * (1 - WARMUP_RATIO)
    return factor


def seg_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Cross-entropy averaged over labelled pixels (0, not NaN, when a crop has none)."""
    total = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    return total / (target != ignore_index).sum().clamp_min(1)


# ---------------------------------------------------------------- data stream


class SeededSamples(torch.utils.data.Dataset):
    """Dataset keyed by ``(index, draw)``: the transform's randomness is seeded by
    (seed, draw), so a resumed run sees exactly the crops an uninterrupted one would."""

    def __init__(self, dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, draw = key
        with seeded_cpu_rng(key_seed(self.seed, draw)):
            return self.dataset[index]


class BatchStream(torch.utils.data.Sampler):
    """Batches ``start..total-1`` of an endless stream of seeded permutations of the
    training set: draw ``d`` is sample ``d mod n`` of permutation ``d // n``."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.total = start, total

    def __len__(self) -> int:
        return self.total - self.start

    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self):
        epoch, perm = -1, None
        for it in range(self.start, self.total):
            batch = []
            for draw in range(it * self.batch_size, (it + 1) * self.batch_size):
                if draw // self.n != epoch:
                    epoch = draw // self.n
                    perm = self._perm(epoch)
                batch.append((int(perm[draw % self.n]), draw))
            yield batch


# ---------------------------------------------------------------- sliding-window inference


def slide_windows(
    height: int, width: int, crop: int, stride: int
) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) windows of side ``crop`` every ``stride`` pixels, the last one
    flush with the border (mmseg's grid); a side shorter than ``crop`` gets one window."""

    def starts(size: int) -> list[int]:
        n = max(size - crop + stride - 1, 0) // stride + 1
        return [min(i * stride, max(size - crop, 0)) for i in range(n)]

    return [
        (y, min(y + crop, height), x, min(x + crop, width))
        for y in starts(height)
        for x in starts(width)
    ]


@torch.no_grad()
def slide_inference(
    model, image: torch.Tensor, num_classes: int, crop: int, stride: int, batch_size: int = 8
) -> torch.Tensor:
    """Logits (1, K, H, W) of one image (1, C, H, W), averaged over overlapping windows.

    A window smaller than ``crop`` (image side < crop) is zero-padded bottom/right to
    ``crop`` (the normalised image's mean) and its logits cropped back."""
    _, _, h, w = image.shape
    windows = slide_windows(h, w, crop, stride)
    logits = image.new_zeros((1, num_classes, h, w), dtype=torch.float32)
    count = image.new_zeros((1, 1, h, w), dtype=torch.float32)
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        crops = torch.cat(
            [
                F.pad(image[:, :, y0:y1, x0:x1], (0, crop - (x1 - x0), 0, crop - (y1 - y0)))
                for y0, y1, x0, x1 in chunk
            ]
        )
        out = model(crops).float()
        for k, (y0, y1, x0, x1) in enumerate(chunk):
            logits[:, :, y0:y1, x0:x1] += out[k : k + 1, :, : y1 - y0, : x1 - x0]
            count[:, :, y0:y1, x0:x1] += 1
    return logits / count


def segmentation_metrics(num_classes: int, ignore_index: int, device):
    return {
        "miou": MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index).to(
            device
        ),
        "pixel_acc": MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index).to(
            device
        ),
    }


def label_histogram(dataset: ADE20KSegmentation, num_classes: int) -> np.ndarray:
    """Pixels per class (int64 [num_classes]) over the annotations of ``dataset`` at their
    stored resolution, read as the dataset reads them (ignored pixels not counted)."""

    def count(ann_path: Path) -> np.ndarray:
        with Image.open(ann_path) as im:
            labels = reduce_zero_label(np.asarray(im), dataset.ignore_index)
        labels = labels[(labels >= 0) & (labels < num_classes)]
        return np.bincount(labels.ravel(), minlength=num_classes)

    counts = np.zeros(num_classes, dtype=np.int64)
    with ThreadPoolExecutor(max_workers=8) as pool:  # PIL decodes without the GIL
        for found in pool.map(count, [ann for _, ann in dataset.pairs]):
            counts += found
    return counts


def majority_class(dataset: ADE20KSegmentation, num_classes: int) -> tuple[int, float]:
    """(most frequent labelled class of ``dataset``, lower index on ties; its pixel share)."""
    counts = label_histogram(dataset, num_classes)
    if counts.sum() == 0:
        raise DataError(f"{dataset.root}: the {dataset.split} annotations label no pixel")
    top = int(np.argmax(counts))  # first maximum
    return top, float(counts[top] / counts.sum())


@torch.no_grad()
def evaluate(
    model, dataset, seg: dict, device, amp_dtype, num_workers: int, log, majority: int | None = None
) -> dict:
    """Single-scale sliding-window mIoU and pixel accuracy (percent) over ``dataset``; with
    ``majority``, also those of predicting that class at every pixel (``*_majority``)."""
    model.eval()
    metrics = segmentation_metrics(seg["num_classes"], seg["ignore_index"], device)
    reference = (
        segmentation_metrics(seg["num_classes"], seg["ignore_index"], device)
        if majority is not None
        else {}
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=num_workers)
    with inference_layout(model, device):
        for image, target in progress(loader, desc="segmentation eval", unit="batch"):
            image, target = image.to(device), target.to(device)
            with autocast(device, amp_dtype):
                logits = slide_inference(
                    model,
                    image,
                    seg["num_classes"],
                    seg["crop_size"],
                    seg["stride"],
                    seg["batch_size"],
                )
            if logits.shape[-2:] != target.shape[-2:]:
                logits = F.interpolate(
                    logits, size=target.shape[-2:], mode="bilinear", align_corners=False
                )
            pred = logits.argmax(1)
            for metric in metrics.values():
                metric.update(pred, target)
            if reference:
                constant = torch.full_like(target, majority)
                for metric in reference.values():
                    metric.update(constant, target)
    out = {name: 100.0 * float(m.compute()) for name, m in metrics.items()}
    log.info(
        "evaluated %d images: mIoU %.2f, pixel accuracy %.2f",
        len(dataset),
        out["miou"],
        out["pixel_acc"],
    )
    if reference:
        out.update(
            {f"{name}_majority": 100.0 * float(m.compute()) for name, m in reference.items()}
        )
        log.info(
            "majority class %d everywhere: mIoU %.2f, pixel accuracy %.2f",
            majority,
            out["miou_majority"],
            out["pixel_acc_majority"],
        )
    return out


# ---------------------------------------------------------------- training


def _amp_dtype(cfg: dict, device):
    # no precision setting of its own: pre-training's, on CUDA only (its CPU results were
    # made in fp32 whatever pre-training used)
    if device.type != "cuda":
        return None
    return autocast_dtype(cfg["pretrain"]["amp"], device)


def _fingerprint(cfg: dict) -> dict:
    """What a checkpoint must share with the current settings to be resumed."""
    return {
        "segmentation": cfg["eval"]["segmentation"],
        "feature_source": cfg["eval"]["feature_source"],
        "seed": cfg["experiment"]["seed"],
    }


def train(
    model, cfg: dict, train_set, out_dir: Path, device, amp_dtype, log, hooks: Sequence[Hook] = ()
) -> None:
    """Train (resuming from ``out_dir/checkpoint.pt``); the final checkpoint keeps only the
    network, marked finished, so a crash during evaluation never retrains. ``hooks``:
    called after every iteration (``folk.engine.hooks``)."""
    seg = cfg["eval"]["segmentation"]
    total, seed = seg["iterations"], cfg["experiment"]["seed"]
    resnet = is_resnet(cfg["model"]["arch"])
    groups = param_groups(model, resnet, seg)
    optimizer = torch.optim.AdamW(groups, lr=seg["lr"], betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    path = out_dir / CHECKPOINT
    start = 0
    state_file = StateFile(
        path,
        identity={"fingerprint": _fingerprint(cfg)},
        disposable=False,
        remedy="delete it to start this segmentation evaluation over",
        other="other eval.segmentation settings",
        log=log,
    )
    ckpt = state_file.load()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if ckpt["finished"]:
            log.info("%s: training finished earlier", path)
            return
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        start = ckpt["iteration"]
        log.info("resuming from %s at iteration %d", path, start)

    def save(iteration: int, finished: bool) -> None:
        state = {"iteration": iteration, "finished": finished, "model": model.state_dict()}
        if not finished:
            state.update(
                optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), rng=rng_state()
            )
        state_file.save(state)

    sampler = BatchStream(len(train_set), seg["batch_size"], seed, start, total)
    loader = torch.utils.data.DataLoader(
        SeededSamples(train_set, seed),
        batch_sampler=sampler,
        num_workers=cfg["data"]["num_workers"],
        pin_memory=device.type == "cuda",
        # its own generator: creating the iterator must not draw from the global RNG,
        # whose state (dropout, drop path) a resumed run restores from the checkpoint
        generator=torch.Generator().manual_seed(seed),
    )
    model.train()
    bar = progress(loader, desc="segmentation train", initial=start, total=total)
    for it, (images, targets) in enumerate(bar, start=start):
        factor = lr_factor(it, total, seg["warmup_iterations"])
        for g in optimizer.param_groups:
            g["lr"] = seg["lr"] * g["lr_scale"] * factor
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits, aux = model.forward_train(images)
        loss = seg_loss(logits, targets, seg["ignore_index"])
        if aux is not None:
            loss = loss + seg["aux_weight"] * seg_loss(aux, targets, seg["ignore_index"])
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"segmentation loss is {loss.item()} at iteration {it} "
                f"(lr {seg['lr'] * factor:.3g}); see {out_dir / 'log.txt'}"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        done = it + 1
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if done % LOG_EVERY == 0 or done == total:
            log.info(
                "iteration %d/%d loss %.4f lr %.3g", done, total, loss.item(), seg["lr"] * factor
            )
        saved = done % seg["checkpoint_every"] == 0 and done < total
        if saved:
            save(done, finished=False)
        # the stream's epochs: permutations of the training set, which batches straddle
        epoch = it * seg["batch_size"] // len(train_set)
        call_hooks(
            hooks, Boundary(done, epoch, done * seg["batch_size"] // len(train_set) > epoch, saved)
        )
    save(total, finished=True)


# ---------------------------------------------------------------- entry point


def run(cfg: dict, run_dir: Path, out_dir: Path, log) -> dict:
    seg = cfg["eval"]["segmentation"]
    check_config(cfg)
    info = check_data(seg)
    log.info(
        "%s at %s: %s",
        seg["dataset"],
        seg["root"],
        ", ".join(f"{s} {v['images']} images" for s, v in info["splits"].items()),
    )

    device = training_device()
    amp_dtype = _amp_dtype(cfg, device)
    seed = cfg["experiment"]["seed"]
    data = cfg["data"]
    in_chans = data["in_chans"]
    train_set = ADE20KSegmentation(
        seg["root"],
        "training",
        in_chans=in_chans,
        ignore_index=seg["ignore_index"],
        transform=SegTrainTransform(
            seg["crop_size"], seg["scale"], data["mean"], data["std"], seg["ignore_index"]
        ),
    )
    val_set = ADE20KSegmentation(
        seg["root"],
        "validation",
        in_chans=in_chans,
        ignore_index=seg["ignore_index"],
        transform=SegEvalTransform(seg["scale"], data["mean"], data["std"]),
    )
    majority, share = majority_class(train_set, seg["num_classes"])
    log.info(
        "training split: class %d is the most frequent (%.1f %% of labelled pixels)",
        majority,
        100.0 * share,
    )

    resnet = is_resnet(cfg["model"]["arch"])
    drop_path = seg["drop_path"] if seg["head"] == "upernet" else None
    backbone, _ = load_backbone(
        run_dir,
        cfg["eval"]["feature_source"],
        drop_path=drop_path,
        dilated_stride=seg["output_stride"] if resnet else None,
    )
    torch.manual_seed(seed)
    model = build_segmenter(backbone, resnet, seg).to(device)
    log.info(
        "%s head on %s (%s backbone%s), crop %d, %d iterations of %d",
        seg["head"],
        cfg["model"]["arch"],
        cfg["eval"]["feature_source"],
        f", output stride {seg['output_stride']}" if resnet else "",
        seg["crop_size"],
        seg["iterations"],
        seg["batch_size"],
    )

    train(model, cfg, train_set, out_dir, device, amp_dtype, log)
    metrics = evaluate(
        model, val_set, seg, device, amp_dtype, data["num_workers"], log, majority=majority
    )
    epochs = math.ceil(seg["iterations"] * seg["batch_size"] / len(train_set))
    return {
        "dataset": seg["dataset"],
        "split": "validation",
        "metrics": metrics,
        "primary": "miou",
        "seed": seed,
        "epochs": epochs,
    }
