"""``folk eval finetune``: end-to-end fine-tuning of the pre-trained backbone (MFM/BEiT
protocol, spec section 5), built from timm's own components.

- Model: the run's backbone (``eval.feature_source``, the teacher by default) with drop path
  ``eval.finetune.drop_path``; ViT with mean pooling over the patch tokens followed by a
  freshly initialised LayerNorm (``fc_norm``, replacing the final norm, as in MFM/BEiT/MAE)
  when ``eval.finetune.global_pool`` is ``avg``, else the CLS token; ResNet average pool.
  A new linear head with small initial weights (std 2e-5, as MAE/BEiT).
- Optimiser: timm ``create_optimizer_v2("adamw")`` with layer-wise lr decay (BEiT's scheme:
  scale ``layer_decay ** (num_layers - 1 - layer_id)``; stem 0, block i i+1, head last);
  lr = ``base_lr * batch_size / 512``; no weight decay on 1-D parameters and pos/cls tokens.
- Schedule: timm ``CosineLRScheduler`` updated every optimiser step (``t_in_epochs=False``),
  linear warm-up from 0 over ``warmup_epochs``, then cosine to ``min_lr``.
- Data: timm ``create_transform(is_training=True)`` with RandAugment ``auto_augment``, random
  erasing ``reprob``, bicubic resized crops, ``data.mean``/``data.std``; timm ``Mixup``
  (mixup, cutmix, label smoothing) with ``SoftTargetCrossEntropy``. Test images go through
  ``folk.data.transforms.eval_transform``; the test split is used only for the final accuracy.

Reproducibility. The order of the training images in an epoch is a permutation drawn from a
dedicated generator seeded with the training seed; each image's augmentation is drawn from
RNGs seeded by (seed, epoch, position), so it does not depend on ``data.num_workers`` nor on
where a run was interrupted. ``checkpoint.pt`` (written atomically every
``eval.finetune.checkpoint_every`` optimiser steps and at each epoch end) holds the model,
the optimiser, the schedule position, epoch and step, the torch/numpy/python RNG states and
the sampler generator's state, so a resumed run continues exactly where the interrupted one
stopped (bitwise on the CPU).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageOps
from timm.data import Mixup, create_transform
from timm.data import auto_augment as aa
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader, Dataset

from folk.data.classification import build_base_dataset, build_dataset, collate_skip_none
from folk.data.transforms import eval_transform
from folk.engine.checkpoint import StateFile, refuse_or_discard, rng_state, set_rng_state
from folk.engine.device import autocast, autocast_dtype, training_device
from folk.engine.hooks import Boundary, Hook, call_hooks
from folk.errors import ConfigError, DataError, NonFiniteLossError, RunDirError
from folk.models import build_backbone, inference_layout, load_backbone
from folk.recipes import is_resnet
from folk.utils.io import atomic_torch_save, atomic_write_json, load_torch_file
from folk.utils.progress import progress
from folk.utils.seeding import key_seed, seeded_global_rngs

CHECKPOINT_FORMAT = 1
LR_BASE_BATCH = 512  # base_lr is given per this many images (MFM)
HEAD_INIT_STD = 2e-5  # MFM/BEiT: timm's 0.02 times their init_scale 0.001
OTHER_CONFIGURATION = "a different fine-tuning configuration"


# ------------------------------------------------------------------ the classifier


def make_classifier(
    backbone: nn.Module,
    num_classes: int,
    global_pool: str = "avg",
    head_init_std: float = HEAD_INIT_STD,
) -> nn.Module:
    """Turn a timm backbone (built with ``num_classes=0``) into a classifier in place.

    ViT with ``avg``: mean of the patch tokens, then a fresh LayerNorm (``fc_norm``) where
    the pre-trained final norm was (MFM/BEiT/MAE fine-tuning); with ``token``: the CLS token
    after the pre-trained final norm. ResNet: global average pool.
    """
    if hasattr(backbone, "blocks"):
        if global_pool == "avg" and not isinstance(backbone.norm, nn.Identity):
            fc_norm = copy.deepcopy(backbone.norm)
            fc_norm.reset_parameters()
            backbone.norm = nn.Identity()
            backbone.fc_norm = fc_norm
        backbone.reset_classifier(num_classes, global_pool=global_pool)
    else:
        backbone.reset_classifier(num_classes)
    head = backbone.get_classifier()
    nn.init.trunc_normal_(head.weight, std=head_init_std)
    nn.init.zeros_(head.bias)
    return backbone


def load_classifier(cfg: dict, path: Path) -> nn.Module:
    """The fine-tuned classifier saved in ``path`` (``classifier.pt``): architecture from
    ``cfg``, pooling from the saved tensors (``fc_norm`` exists only with mean pooling),
    no drop path."""
    state = load_torch_file(
        path, "delete it and run the fine-tuning evaluation again to rewrite it"
    )
    model = build_backbone(cfg, drop_path=0.0)
    pool = "avg" if "fc_norm.weight" in state or not hasattr(model, "blocks") else "token"
    model = make_classifier(model, cfg["data"]["num_classes"], pool)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = "; ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise RunDirError(
            f"{path}: does not match model.arch={cfg['model']['arch']!r} with "
            f"data.num_classes={cfg['data']['num_classes']}: {detail}"
        ) from None
    return model


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, layer_decay: float):
    """timm AdamW with BEiT's layer-wise lr decay (groups carry ``lr_scale``)."""
    return create_optimizer_v2(
        model, "adamw", lr=lr, weight_decay=weight_decay, layer_decay=layer_decay
    )


# ------------------------------------------------------------------ data


class SeededAugmentation(Dataset):
    """``base[indices[i]]`` through ``transform``, the randomness seeded by
    (seed, epoch, i); an undecodable image stays None (``collate_skip_none`` drops it)."""

    def __init__(self, base: Dataset, indices: Sequence[int], transform, seed: int):
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)
        self.transform, self.seed, self.epoch = transform, int(seed), 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        item = self.base[int(self.indices[i])]
        if item is None:
            return None
        image, label = item
        with seeded_global_rngs(key_seed(self.seed, self.epoch, int(i))):
            return self.transform(image), label


def _posterize_compat(img, bits_to_keep, **_):
    """timm's posterize for Pillow 13 (installed here), which rejects bits=0: keeping 0 bits
    gives a black image, as older Pillow did (RandAugment's 'inc' posterize reaches 0 bits
    at magnitude 10)."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size, 0)
    return ImageOps.posterize(img, bits_to_keep)


def train_transform(cfg: dict):
    """timm's training pipeline for fine-tuning (RandAugment, random erasing, bicubic)."""
    ft = cfg["eval"]["finetune"]
    transform = create_transform(
        input_size=cfg["model"]["img_size"],
        is_training=True,
        color_jitter=None,
        scale=tuple(ft["crop_scale"]),
        auto_augment=ft["auto_augment"] or None,
        interpolation="bicubic",
        re_prob=ft["reprob"],
        re_mode="pixel",
        re_count=1,
        mean=tuple(cfg["data"]["mean"]),
        std=tuple(cfg["data"]["std"]),
    )
    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []):
            if getattr(op, "aug_fn", None) is aa.posterize:
                op.aug_fn = _posterize_compat
    return transform


# ------------------------------------------------------------------ checkpoint helpers


def _suffix(tag: str) -> str:
    return f"-{tag}" if tag else ""


# ------------------------------------------------------------------ training


def device_and_amp(cfg: dict) -> tuple[torch.device, torch.dtype | None]:
    device = training_device()
    return device, autocast_dtype(cfg["eval"]["finetune"]["amp"], device)


def _check_config(cfg: dict, batch_size: int, epochs: int) -> None:
    ft = cfg["eval"]["finetune"]
    if batch_size % ft["accum_steps"]:
        raise ConfigError(
            f"eval.finetune.batch_size = {batch_size} is not divisible by "
            f"eval.finetune.accum_steps = {ft['accum_steps']}"
        )
    if epochs < 1:
        raise ConfigError(f"fine-tuning needs at least one epoch, got {epochs}")
    if ft["global_pool"] == "token" and is_resnet(cfg["model"]["arch"]):
        raise ConfigError(
            "eval.finetune.global_pool = 'token' needs a ViT; "
            f"model.arch is {cfg['model']['arch']!r}"
        )


def _evaluate(model: nn.Module, cfg: dict, device, amp_dtype, log) -> dict[str, float]:
    """top-1 (and top-5 with more than 5 classes) accuracy in percent on the test split."""
    test = build_dataset(cfg, "test", transform=eval_transform(cfg))
    loader = DataLoader(
        test,
        batch_size=cfg["eval"]["batch_size"],
        shuffle=False,
        num_workers=cfg["data"]["num_workers"],
        collate_fn=collate_skip_none,
        pin_memory=device.type == "cuda",
    )
    num_classes = cfg["data"]["num_classes"]
    ks = (1, 5) if num_classes > 5 else (1,)
    correct = dict.fromkeys(ks, 0)
    total = skipped = 0
    model.eval()
    with torch.inference_mode(), inference_layout(model, device):
        for images, labels, n_skipped in progress(
            loader, desc="finetune test", unit="batch", leave=False
        ):
            skipped += int(n_skipped)
            if len(labels) == 0:
                continue
            images, labels = images.to(device, non_blocking=True), labels.to(device)
            with autocast(device, amp_dtype):
                logits = model(images)
            top = logits.float().topk(max(ks), dim=1).indices
            hits = top == labels[:, None]
            for k in ks:
                correct[k] += int(hits[:, :k].any(dim=1).sum())
            total += len(labels)
    if total == 0:
        raise DataError(
            f"test split of '{cfg['data']['dataset']}' at data.root "
            f"'{cfg['data']['root']}' gave no decodable image"
        )
    if skipped:
        log.warning("test: %d undecodable image(s) skipped", skipped)
    return {f"top{k}": 100.0 * correct[k] / total for k in ks}


def _fingerprint(
    cfg: dict,
    *,
    tag: str,
    seed: int,
    epochs: int,
    batch_size: int,
    indices: np.ndarray,
    source: str,
) -> str:
    """What a checkpoint must agree on to be resumed."""
    payload = {
        "finetune": {k: v for k, v in cfg["eval"]["finetune"].items() if k != "checkpoint_every"},
        "model": cfg["model"],
        "data": {
            k: v for k, v in cfg["data"].items() if k not in ("num_workers", "root", "source")
        },
        "tag": tag,
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "source": source,
        "indices": hashlib.sha256(
            np.ascontiguousarray(indices, dtype=np.int64).tobytes()
        ).hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def train_classifier(
    cfg: dict,
    run_dir: Path,
    out_dir: Path,
    log: logging.Logger,
    *,
    train_indices: Sequence[int] | None = None,
    epochs: int | None = None,
    tag: str = "",
    seed: int | None = None,
    hooks: Sequence[Hook] = (),
) -> dict:
    """Fine-tune the run's backbone and report its test accuracy.

    ``train_indices`` index the *whole* training split (``build_base_dataset``, as few-shot
    lists do); without them the training split is ``build_dataset(cfg, "train")`` (which
    honours ``data.train_subset``). ``epochs`` defaults to ``eval.finetune.epochs``; ``seed``
    to ``experiment.seed``. Files, with ``-<tag>`` before the extension when a tag is given:
    ``checkpoint.pt`` (while training), ``classifier.pt`` (the fine-tuned model's state dict)
    and ``result.json``; a call whose ``result.json`` matches returns it without training.
    ``hooks``: called after every optimiser step (``folk.engine.hooks``).

    Returns ``{"metrics": {"top1", ["top5"]}, "epochs", "seed", "dataset", "train_images",
    "iterations", "batch_size"}``.
    """
    ft = cfg["eval"]["finetune"]
    seed = cfg["experiment"]["seed"] if seed is None else int(seed)
    epochs = ft["epochs"] if epochs is None else int(epochs)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / f"checkpoint{_suffix(tag)}.pt"
    classifier_path = out_dir / f"classifier{_suffix(tag)}.pt"
    result_path = out_dir / f"result{_suffix(tag)}.json"
    _check_config(cfg, ft["batch_size"], epochs)
    source = cfg["eval"]["feature_source"]

    # ---- data (cheap checks first: a bad data.root fails before any model is built)
    if train_indices is None:
        base = build_dataset(cfg, "train")
        indices = np.arange(len(base), dtype=np.int64)
    else:
        base = build_base_dataset(cfg, "train")
        indices = np.asarray(train_indices, dtype=np.int64)
        if indices.ndim != 1 or len(indices) == 0:
            raise DataError(f"fine-tuning subset '{tag}' is empty")
        if indices.min() < 0 or indices.max() >= len(base):
            raise DataError(
                f"fine-tuning subset '{tag}' has indices outside the training "
                f"split of '{base.name}' ({len(base)} images)"
            )
    n_train = len(indices)
    batch_size = min(ft["batch_size"], n_train)
    accum = ft["accum_steps"] if batch_size % ft["accum_steps"] == 0 else 1
    micro_batch = batch_size // accum
    steps_per_epoch = n_train // batch_size  # drop_last: every step sees a full batch
    total_steps = steps_per_epoch * epochs
    warmup_steps = ft["warmup_epochs"] * steps_per_epoch
    if warmup_steps >= total_steps:
        log.warning(
            "%swarm-up of %d epochs is not shorter than the %d training epochs: "
            "shortened to %d of %d steps",
            f"[{tag}] " if tag else "",
            ft["warmup_epochs"],
            epochs,
            total_steps - 1,
            total_steps,
        )
        warmup_steps = total_steps - 1
    lr = ft["base_lr"] * batch_size / LR_BASE_BATCH
    fingerprint = _fingerprint(
        cfg,
        tag=tag,
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        indices=indices,
        source=source,
    )

    if result_path.is_file() and classifier_path.is_file():
        done = json.loads(result_path.read_text())
        if done.get("fingerprint") == fingerprint:
            log.info("%s exists: fine-tuning %s already done", result_path, tag or "")
            return done["result"]
        refuse_or_discard(
            False,
            f"{result_path} was written by {OTHER_CONFIGURATION}",
            f"delete it (and {classifier_path.name}) to fine-tune again",
            log,
        )

    # ---- model, optimiser, schedule
    device, amp_dtype = device_and_amp(cfg)
    # every global RNG from the seed: the head's initialisation (torch), mixup (numpy),
    # drop path (torch); a resumed run overwrites them with the checkpoint's states
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    backbone, _ = load_backbone(run_dir, source, drop_path=ft["drop_path"])
    model = make_classifier(
        backbone, cfg["data"]["num_classes"], ft["global_pool"], ft["head_init_std"]
    ).to(device)
    optimizer = build_optimizer(model, lr, ft["weight_decay"], ft["layer_decay"])
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_steps - warmup_steps),
        lr_min=ft["min_lr"],
        warmup_t=warmup_steps,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    mixup = None
    if ft["mixup"] > 0 or ft["cutmix"] > 0:
        mixup = Mixup(
            mixup_alpha=ft["mixup"],
            cutmix_alpha=ft["cutmix"],
            prob=1.0,
            switch_prob=0.5,
            mode="batch",
            label_smoothing=ft["label_smoothing"],
            num_classes=cfg["data"]["num_classes"],
        )
        criterion = SoftTargetCrossEntropy()
    elif ft["label_smoothing"] > 0:
        criterion = LabelSmoothingCrossEntropy(smoothing=ft["label_smoothing"])
    else:
        criterion = nn.CrossEntropyLoss()

    train_set = SeededAugmentation(base, indices, train_transform(cfg), seed)
    sampler_gen = torch.Generator().manual_seed(seed)
    start_epoch, start_step, step = 0, 0, 0
    state_file = StateFile(
        ckpt_path,
        identity={"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint},
        disposable=False,
        remedy="delete it to start this fine-tuning over",
        other=OTHER_CONFIGURATION,
        log=log,
    )
    ckpt = state_file.load()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, start_step, step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["step"]
        sampler_gen.set_state(ckpt["sampler"])
        set_rng_state(ckpt["rng"])
        log.info("resumed %s at epoch %d, step %d of %d", ckpt_path, start_epoch, step, total_steps)
    else:
        log.info(
            "fine-tuning%s: %d images, %d epochs x %d steps, batch %d (%d x %d), lr %.3g, "
            "layer decay %g, warm-up %d steps, device %s%s",
            f" [{tag}]" if tag else "",
            n_train,
            epochs,
            steps_per_epoch,
            batch_size,
            accum,
            micro_batch,
            lr,
            ft["layer_decay"],
            warmup_steps,
            device.type,
            f" ({amp_dtype})" if amp_dtype else "",
        )

    def save_checkpoint(epoch: int, step_in_epoch: int, sampler_state: torch.Tensor) -> None:
        state_file.save(
            {
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {"num_updates": step},
                "sampler": sampler_state,
                "rng": rng_state(),
            }
        )

    loader_gen = torch.Generator()  # worker base seeds: not drawn from the global RNG
    for epoch in range(start_epoch, epochs):
        epoch_state = sampler_gen.get_state()
        order = torch.randperm(n_train, generator=sampler_gen)
        skip = start_step if epoch == start_epoch else 0
        train_set.epoch = epoch
        loader = DataLoader(
            train_set,
            batch_size=micro_batch,
            sampler=order[skip * batch_size : steps_per_epoch * batch_size].tolist(),
            num_workers=cfg["data"]["num_workers"],
            collate_fn=collate_skip_none,
            pin_memory=device.type == "cuda",
            drop_last=True,
            generator=loader_gen,
        )
        model.train()
        started, loss_sum, loss_n, skipped = time.time(), 0.0, 0, 0
        batches = iter(loader)
        bar = progress(
            range(skip, steps_per_epoch),
            desc=f"finetune{_suffix(tag)} epoch {epoch}",
            unit="step",
            leave=False,
        )
        for step_in_epoch in bar:
            scheduler.step_update(num_updates=step)
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for _ in range(accum):
                images, labels, n_skipped = next(batches)
                skipped += int(n_skipped)
                if len(labels) == 0:
                    continue
                images, labels = images.to(device, non_blocking=True), labels.to(device)
                if mixup is not None:
                    images, targets = mixup(images, labels)
                else:
                    targets = labels
                with autocast(device, amp_dtype):
                    loss = criterion(model(images), targets)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"fine-tuning{_suffix(tag)}: loss is "
                        f"{loss.item()} at epoch {epoch}, step {step}"
                    )
                (loss / accum).backward()
                step_loss += loss.item() / accum
            optimizer.step()
            step += 1
            loss_sum += step_loss
            loss_n += 1
            bar.set_postfix(loss=f"{step_loss:.4f}")
            last = step_in_epoch + 1 == steps_per_epoch
            saved = last or step % ft["checkpoint_every"] == 0
            if last:
                save_checkpoint(epoch + 1, 0, sampler_gen.get_state())
            elif saved:
                save_checkpoint(epoch, step_in_epoch + 1, epoch_state)
            call_hooks(hooks, Boundary(step, epoch, last, saved))
        bar.close()
        seconds = time.time() - started
        images_done = (steps_per_epoch - skip) * batch_size
        log.info(
            "%sepoch %d/%d: loss %.4f, lr %.3g, %.1f images/s%s",
            f"[{tag}] " if tag else "",
            epoch + 1,
            epochs,
            loss_sum / max(loss_n, 1),
            max(g["lr"] for g in optimizer.param_groups),
            images_done / max(seconds, 1e-9),
            f", {skipped} undecodable image(s) skipped" if skipped else "",
        )

    atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, classifier_path)
    metrics = _evaluate(model, cfg, device, amp_dtype, log)
    log.info(
        "%stest %s",
        f"[{tag}] " if tag else "",
        ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()),
    )
    result = {
        "metrics": metrics,
        "epochs": epochs,
        "seed": seed,
        "dataset": base.name,
        "train_images": n_train,
        "iterations": total_steps,
        "batch_size": batch_size,
    }
    atomic_write_json(result_path, {"fingerprint": fingerprint, "result": result})
    ckpt_path.unlink(missing_ok=True)
    return result


def run(cfg: dict, run_dir: Path, out_dir: Path, log: logging.Logger) -> dict[str, Any]:
    result = train_classifier(cfg, run_dir, out_dir, log)
    return {
        "dataset": result["dataset"],
        "split": "test",
        "metrics": result["metrics"],
        "primary": "top1",
        "seed": result["seed"],
        "epochs": result["epochs"],
    }
