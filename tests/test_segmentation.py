"""Segmentation: ADE20K layout and loader, Fashion-MNIST composite, UperNet/linear heads,
sliding-window inference, mIoU, and the `folk eval segmentation` command end to end."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from folk.data.segmentation import (
    ADE20KSegmentation,
    SegEvalTransform,
    SegTrainTransform,
    build_composite,
    check_ade20k_layout,
    load_fashion_mnist,
)
from folk.errors import DataError
from tests.conftest import tiny_overrides

torch.set_num_threads(1)

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


# ---------------------------------------------------------------- helpers


def make_ade_tree(root: Path, n_train: int = 4, n_val: int = 2, seed: int = 0) -> Path:
    """ADE20K layout with random RGB images and labels 0..150 (0, 5 and 150 always there)."""
    rng = np.random.default_rng(seed)
    for split, n in (("training", n_train), ("validation", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            h, w = int(rng.integers(36, 50)), int(rng.integers(36, 60))
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            labels = rng.integers(0, 151, (h, w)).astype(np.uint8)
            labels[0, :3] = [0, 5, 150]
            stem = f"ADE_{split}_{i:08d}"
            Image.fromarray(image).save(root / "images" / split / f"{stem}.jpg")
            Image.fromarray(labels, mode="L").save(root / "annotations" / split / f"{stem}.png")
    return root


def composite_cfg(fashion_root: Path, seg_root: Path, *extra: str) -> dict:
    from folk.config import load_config

    return load_config(
        None,
        [
            f"data.root={fashion_root}",
            f"eval.segmentation.root={seg_root}",
            "eval.segmentation.composite_canvas=40",
            "eval.segmentation.composite_train=6",
            "eval.segmentation.composite_test=4",
            *extra,
        ],
    )


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


# ---------------------------------------------------------------- metrics


def test_miou_and_pixel_accuracy_on_a_hand_made_example():
    from folk.evals.segmentation import segmentation_metrics

    # class 0: inter 1, union 3; class 1: inter 2, union 3; class 2: inter 0, union 1
    # (its only prediction sits on an ignored pixel); class 3 absent from both: not averaged
    target = torch.tensor([[0, 0, 1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])
    metrics = segmentation_metrics(4, 255, "cpu")
    for m in metrics.values():
        m.update(pred, target)
    assert float(metrics["miou"].compute()) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert float(metrics["pixel_acc"].compute()) == pytest.approx(3 / 5)


def test_miou_matches_an_explicit_confusion_matrix():
    from folk.evals.segmentation import segmentation_metrics

    rng = np.random.default_rng(1)
    k = 6
    target = rng.integers(0, k - 1, (3, 20, 30))  # class 5 never in the target
    target[rng.random(target.shape) < 0.2] = 255
    pred = rng.integers(0, k, (3, 20, 30))
    pred[0, 0, :4] = 5  # ...but predicted somewhere
    conf = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t != 255:
            conf[t, p] += 1
    ious = []
    for c in range(k):
        inter = conf[c, c]
        union = conf[c, :].sum() + conf[:, c].sum() - inter
        if union > 0:
            ious.append(inter / union)
    metrics = segmentation_metrics(k, 255, "cpu")
    for i in range(3):  # accumulates over images
        for m in metrics.values():
            m.update(torch.from_numpy(pred[i : i + 1]), torch.from_numpy(target[i : i + 1]))
    assert float(metrics["miou"].compute()) == pytest.approx(np.mean(ious), abs=1e-6)
    assert float(metrics["pixel_acc"].compute()) == pytest.approx(
        np.trace(conf) / conf.sum(), abs=1e-6
    )


# ---------------------------------------------------------------- ADE20K layout and loader


def test_loader_shapes_and_reduce_zero_label(tmp_path):
    root = make_ade_tree(tmp_path / "ade")
    ds = ADE20KSegmentation(root, "training")
    assert len(ds) == 4
    image, mask = ds[0]
    ann = np.asarray(Image.open(root / "annotations" / "training" / "ADE_training_00000000.png"))
    assert image.dtype == torch.uint8 and image.shape == (3, *ann.shape)
    assert mask.dtype == torch.int64 and mask.shape == ann.shape
    m = mask.numpy()
    assert m[0, 0] == 255 and m[0, 1] == 4 and m[0, 2] == 149
    assert (m[ann == 0] == 255).all()
    assert (m[ann > 0] == ann[ann > 0].astype(np.int64) - 1).all()
    grey = ADE20KSegmentation(root, "validation", in_chans=1)[1][0]
    assert grey.shape[0] == 1


def test_train_transform_crops_pads_with_ignore_and_normalises(tmp_path):
    root = make_ade_tree(tmp_path / "ade")
    crop = 64  # larger than every image: padding is certain
    ds = ADE20KSegmentation(
        root,
        "training",
        transform=SegTrainTransform(crop, 0, MEAN, STD, 255, ratio_range=(0.5, 0.6)),
    )
    torch.manual_seed(0)
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.shape == (3, crop, crop) and image.dtype == torch.float32
        assert mask.shape == (crop, crop) and mask.dtype == torch.int64
        values = set(mask.unique().tolist())
        assert values <= set(range(150)) | {255}
        assert (mask == 255).float().mean() > 0.5  # the padded area is ignored
        # padded image pixels are 0 before normalisation
        black = torch.tensor([-m / s for m, s in zip(MEAN, STD)]).view(3, 1, 1)
        pad = (mask == 255) & torch.isclose(image, black, atol=1e-5).all(0)
        assert pad.float().mean() > 0.4


def test_eval_transform_only_normalises_at_scale_zero(tmp_path):
    root = make_ade_tree(tmp_path / "ade")
    raw_image, raw_mask = ADE20KSegmentation(root, "validation")[0]
    image, mask = ADE20KSegmentation(root, "validation", transform=SegEvalTransform(0, MEAN, STD))[
        0
    ]
    expected = (raw_image.float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(
        STD
    ).view(3, 1, 1)
    assert torch.allclose(image, expected, atol=1e-5)
    assert torch.equal(mask, raw_mask)
    # at scale 40 the short side becomes 40 (mmseg keep-ratio), the mask keeps its size
    scaled, mask40 = ADE20KSegmentation(
        root, "validation", transform=SegEvalTransform(40, MEAN, STD)
    )[0]
    h, w = raw_image.shape[1:]
    assert min(scaled.shape[1:]) == 40
    assert scaled.shape[1:] == (round(h * 40 / min(h, w)), round(w * 40 / min(h, w)))
    assert mask40.shape == (h, w)


def test_layout_check_counts_a_good_tree(tmp_path):
    root = make_ade_tree(tmp_path / "ade", n_train=3, n_val=2)
    info = check_ade20k_layout(root)
    assert info["splits"] == {"training": {"images": 3}, "validation": {"images": 2}}
    assert info["num_classes"] == 150


def test_layout_check_lists_every_problem_with_paths(tmp_path):
    root = make_ade_tree(tmp_path / "ade", n_train=3, n_val=2)
    lonely = root / "images" / "training" / "ADE_training_00000001.jpg"
    (root / "annotations" / "training" / "ADE_training_00000001.png").unlink()
    orphan = root / "annotations" / "training" / "ADE_training_00000099.png"
    Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(orphan)
    bad_values = root / "annotations" / "training" / "ADE_training_00000002.png"
    labels = np.asarray(Image.open(bad_values)).copy()
    labels[1, 1] = 151
    Image.fromarray(labels, mode="L").save(bad_values)
    broken = root / "images" / "training" / "ADE_training_00000000.jpg"
    broken.write_bytes(b"not a jpeg")
    val_images = root / "images" / "validation"
    for p in val_images.iterdir():
        p.unlink()
    val_images.rmdir()
    with pytest.raises(DataError) as err:
        check_ade20k_layout(root)
    msg = str(err.value)
    assert "5 problem(s)" in msg
    assert f"{lonely}: no annotation" in msg
    assert f"{orphan}: annotation without an image" in msg
    assert f"{bad_values}: label value 151 > 150" in msg
    assert f"{broken}: unreadable image" in msg
    assert f"{val_images}: missing directory" in msg
    # the structural check alone (what an evaluation runs) skips decoding
    with pytest.raises(DataError) as err:
        check_ade20k_layout(root, decode=False)
    assert "3 problem(s)" in str(err.value) and str(broken) not in str(err.value)


def test_layout_check_on_a_missing_root(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        check_ade20k_layout(tmp_path / "nowhere")


# ---------------------------------------------------------------- composite


def test_composite_is_deterministic_from_the_seed(fashion_root, tmp_path):
    a = build_composite(composite_cfg(fashion_root, tmp_path / "a"))
    build_composite(composite_cfg(fashion_root, tmp_path / "b"))
    build_composite(composite_cfg(fashion_root, tmp_path / "c", "experiment.seed=1"))
    bytes_a, bytes_b, bytes_c = (tree_bytes(tmp_path / n) for n in "abc")
    assert len(bytes_a) == 2 * (6 + 4)
    assert bytes_a == bytes_b
    assert bytes_a.keys() == bytes_c.keys() and bytes_a != bytes_c
    assert a["num_classes"] == 11 and a["classes"][0] == "background"
    assert (tmp_path / "a" / "images" / "training" / "composite_000005.png").is_file()


def test_composite_labels_match_pixels_and_load_as_ade20k(fashion_root, tmp_path):
    root = tmp_path / "comp"
    manifest = build_composite(composite_cfg(fashion_root, root))
    threshold = manifest["params"]["threshold"]
    for split, n in (("training", 6), ("validation", 4)):
        for i in range(n):
            name = f"composite_{i:06d}.png"
            image = np.asarray(Image.open(root / "images" / split / name))
            labels = np.asarray(Image.open(root / "annotations" / split / name))
            assert image.shape == labels.shape == (40, 40)
            assert set(np.unique(labels)) <= set(range(1, 12))
            assert (labels == 1).any()  # background present
            assert ((image > threshold) == (labels > 1)).all()
            assert (image[labels == 1] == 0).all()
    assert check_ade20k_layout(root, num_classes=11)["splits"]["validation"]["images"] == 4
    ds = ADE20KSegmentation(root, "training")
    _, mask = ds[0]
    assert set(mask.unique().tolist()) <= set(range(11)) and (mask == 0).any()
    total = np.array(manifest["splits"]["training"]["pixels_per_class"])
    assert total.sum() == 6 * 40 * 40 and total[0] > 0


def test_composite_items_are_real_fashion_mnist_items_of_their_class(fashion_root, tmp_path):
    """With one item per canvas, the pasted pixels are a thresholded Fashion-MNIST image of
    the labelled class, from train for training canvases and from test for validation."""
    root = tmp_path / "one"
    cfg = composite_cfg(fashion_root, root, "eval.segmentation.composite_items=1")
    threshold = build_composite(cfg)["params"]["threshold"]
    for split, prefix in (("training", "train"), ("validation", "test")):
        images, labels = load_fashion_mnist(fashion_root, prefix)
        kept = np.where(images > threshold, images, 0)
        for i in range(2):
            name = f"composite_{i:06d}.png"
            canvas = np.asarray(Image.open(root / "images" / split / name))
            lab = np.asarray(Image.open(root / "annotations" / split / name))
            classes = set(np.unique(lab)) - {1}
            assert len(classes) == 1
            cls = classes.pop() - 2
            ys, xs = np.nonzero(lab > 1)
            candidates = kept[labels == cls]
            found = False
            for y in range(max(0, ys.max() - 27), min(ys.min(), 40 - 28) + 1):
                for x in range(max(0, xs.max() - 27), min(xs.min(), 40 - 28) + 1):
                    window = canvas[y : y + 28, x : x + 28]
                    outside = canvas.copy()
                    outside[y : y + 28, x : x + 28] = 0
                    if outside.any():
                        continue
                    if (candidates == window).all(axis=(1, 2)).any():
                        found = True
            assert found, f"{split}/{name}: no {prefix} image of class {cls} matches"


def test_composite_is_idempotent_and_rebuilds_on_new_parameters(fashion_root, tmp_path):
    root = tmp_path / "comp"
    first = build_composite(composite_cfg(fashion_root, root))
    probe = root / "images" / "training" / "composite_000000.png"
    stamp = probe.stat().st_mtime_ns
    os.utime(probe, ns=(stamp - 10**9, stamp - 10**9))
    assert build_composite(composite_cfg(fashion_root, root)) == first
    assert probe.stat().st_mtime_ns == stamp - 10**9  # not rewritten
    smaller = build_composite(
        composite_cfg(fashion_root, root, "eval.segmentation.composite_train=3")
    )
    assert smaller["splits"]["training"]["images"] == 3
    assert len(list((root / "images" / "training").iterdir())) == 3
    assert len(list((root / "annotations" / "training").iterdir())) == 3
    assert json.loads((root / "manifest.json").read_text()) == smaller


def test_composite_refuses_foreign_files_and_missing_source(fashion_root, tmp_path):
    root = make_ade_tree(tmp_path / "ade", n_train=1, n_val=1)
    with pytest.raises(DataError, match="not composites"):
        build_composite(composite_cfg(fashion_root, root))
    with pytest.raises(DataError, match=f"data.root '{tmp_path / 'empty'}' has no"):
        build_composite(composite_cfg(tmp_path / "empty", tmp_path / "comp"))


# ---------------------------------------------------------------- networks


def tiny_vit(img_size: int = 32):
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224", img_size=img_size, patch_size=4, depth=4, num_classes=0
    )


SEG = dict(
    head="upernet",
    num_classes=7,
    channels=16,
    out_indices=[3, 5, 7, 11],
    aux_weight=0.4,
    crop_size=32,
)


def test_vit_block_indices_spread_for_shallow_vits():
    from folk.evals.upernet import vit_block_indices

    assert vit_block_indices(12, [3, 5, 7, 11]) == [3, 5, 7, 11]
    assert vit_block_indices(6, [3, 5, 7, 11]) == [1, 2, 4, 5]
    assert vit_block_indices(4, [3, 5, 7, 11]) == [0, 1, 2, 3]
    assert vit_block_indices(2, [3, 5, 7, 11]) == [0, 0, 1, 1]


def test_upernet_on_a_tiny_vit():
    from folk.evals.upernet import build_segmenter

    model = build_segmenter(tiny_vit(), False, SEG)
    x = torch.randn(2, 3, 32, 32)
    pyramid = model.pyramid(x)
    # strides 4, 8, 16, 32 whatever the patch: 32 px gives 8, 4, 2, 1 at patch 4 ...
    assert [tuple(f.shape) for f in pyramid] == [(2, 192, s, s) for s in (8, 4, 2, 1)]
    # ... and 16, 8, 4, 2 on 64 px at patch 16 (BEiT's deconv x4, deconv x2, id, pool)
    import timm

    vit16 = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2, num_classes=0)
    seg16 = build_segmenter(vit16, False, dict(SEG, crop_size=64))
    assert [tuple(f.shape[-2:]) for f in seg16.pyramid(torch.randn(2, 3, 64, 64))] == [
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
    ]
    logits, aux = model.forward_train(x)
    assert logits.shape == aux.shape == (2, 7, 32, 32)
    model.eval()
    assert model(x).shape == (2, 7, 32, 32)
    # crops larger than the pre-training size: position embedding resampled, not the crop
    bigger = build_segmenter(tiny_vit(), False, dict(SEG, crop_size=48)).eval()
    assert bigger(torch.randn(1, 3, 48, 48)).shape == (1, 7, 48, 48)


def test_upernet_on_resnet50():
    import timm

    from folk.evals.upernet import build_segmenter

    model = build_segmenter(timm.create_model("resnet50", num_classes=0), True, SEG)
    x = torch.randn(2, 3, 64, 64)
    assert [tuple(f.shape[1:]) for f in model.pyramid(x)] == [
        (256, 16, 16),
        (512, 8, 8),
        (1024, 4, 4),
        (2048, 2, 2),
    ]
    logits, aux = model.forward_train(x)
    assert logits.shape == aux.shape == (2, 7, 64, 64)


def test_linear_head_trains_only_the_head():
    from folk.evals.upernet import build_segmenter

    model = build_segmenter(tiny_vit(), False, dict(SEG, head="linear"))
    model.train()
    assert not model.backbone.training
    logits, aux = model.forward_train(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7, 32, 32) and aux is None
    logits.sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())


def test_layer_decay_scales_vit_blocks():
    from folk.evals.segmentation import param_groups
    from folk.evals.upernet import build_segmenter

    model = build_segmenter(tiny_vit(), False, SEG)
    groups = param_groups(model, False, dict(SEG, weight_decay=0.05, layer_decay=0.5))
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    vit = model.backbone
    depth = 4
    # BEiT: block i -> 0.5 ** (depth - i), embeddings 0.5 ** (depth + 1), norm and heads 1
    for i, block in enumerate(vit.blocks):
        assert scale_of[id(block.attn.qkv.weight)] == pytest.approx(0.5 ** (depth - i))
        assert scale_of[id(block.norm1.bias)] == pytest.approx(0.5 ** (depth - i))
    assert scale_of[id(vit.patch_embed.proj.weight)] == pytest.approx(0.5 ** (depth + 1))
    assert scale_of[id(vit.cls_token)] == pytest.approx(0.5 ** (depth + 1))
    assert scale_of[id(vit.norm.weight)] == 1.0
    assert scale_of[id(model.head.fuse[0].weight)] == 1.0
    assert scale_of[id(model.aux_head.conv[0].weight)] == 1.0
    assert scale_of[id(model.head.classifier.weight)] == 1.0
    assert wd_of[id(vit.pos_embed)] == 0.0 and wd_of[id(model.head.classifier.bias)] == 0.0
    assert wd_of[id(model.head.classifier.weight)] == 0.05
    assert len(scale_of) == sum(1 for p in model.parameters() if p.requires_grad)


def test_lr_schedule_warms_up_then_decays_linearly():
    from folk.evals.segmentation import lr_factor

    assert lr_factor(0, 100, 10) == pytest.approx(1e-6)
    assert lr_factor(5, 100, 10) == pytest.approx(0.95 * (1 - 0.5 * (1 - 1e-6)))
    assert lr_factor(10, 100, 10) == pytest.approx(0.9)
    assert lr_factor(60, 100, 10) == pytest.approx(0.4)


# ---------------------------------------------------------------- sliding windows


def reference_starts(size: int, crop: int, stride: int) -> list[int]:
    starts, s = [], 0
    while True:
        starts.append(max(0, min(s, size - crop)))
        if s + crop >= size:
            return starts
        s += stride


def test_slide_windows_cover_every_pixel_with_overlaps():
    from folk.evals.segmentation import slide_windows

    h, w, crop, stride = 50, 37, 16, 10
    windows = slide_windows(h, w, crop, stride)
    assert windows == [
        (y, y + crop, x, x + crop)
        for y in reference_starts(h, crop, stride)
        for x in reference_starts(w, crop, stride)
    ]
    count = np.zeros((h, w), dtype=int)
    for y0, y1, x0, x1 in windows:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        count[y0:y1, x0:x1] += 1
    assert count.min() >= 1 and count.max() > 1
    assert slide_windows(20, 30, 32, 16) == [(0, 20, 0, 30)]


def test_slide_inference_equals_one_forward_when_the_window_covers_the_image():
    from folk.evals.segmentation import slide_inference

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 5, 3, padding=1)
    ).eval()
    image = torch.randn(1, 3, 24, 24)
    assert torch.allclose(slide_inference(net, image, 5, crop=24, stride=16), net(image), atol=1e-6)


def test_slide_inference_averages_overlapping_windows():
    from folk.evals.segmentation import slide_inference

    class ColumnInWindow(torch.nn.Module):
        """Outputs each pixel's column index inside its window: depends on the window."""

        def forward(self, x):
            b, _, h, w = x.shape
            return torch.arange(w, dtype=torch.float32).expand(b, 1, h, w)

    h, w, crop, stride = 20, 45, 16, 12
    out = slide_inference(ColumnInWindow(), torch.zeros(1, 3, h, w), 1, crop, stride, batch_size=3)
    expected = np.zeros((h, w))
    for x in range(w):
        covering = [x0 for x0 in reference_starts(w, crop, stride) if x0 <= x < x0 + crop]
        expected[:, x] = np.mean([x - x0 for x0 in covering])
    assert np.allclose(out[0, 0].numpy(), expected)


# ---------------------------------------------------------------- resume


def test_training_resumes_exactly_after_a_crash(tmp_path):
    import logging

    import folk.evals.segmentation as segeval
    from folk.config import load_config
    from folk.evals.upernet import build_segmenter

    root = make_ade_tree(tmp_path / "ade", n_train=3, n_val=1)
    cfg = load_config(
        None,
        [
            f"eval.segmentation.root={root}",
            "eval.segmentation.iterations=4",
            "eval.segmentation.checkpoint_every=2",
            "eval.segmentation.batch_size=2",
            "eval.segmentation.crop_size=32",
            "eval.segmentation.channels=16",
            "eval.segmentation.scale=0",
            "eval.segmentation.warmup_iterations=1",
            "data.num_workers=0",
            "eval.segmentation.lr=1.0e-3",
        ],
    )
    seg = cfg["eval"]["segmentation"]
    train_set = ADE20KSegmentation(
        root, "training", transform=SegTrainTransform(32, 0, MEAN, STD, 255)
    )
    log = logging.getLogger("test-seg-resume")

    def fresh():
        torch.manual_seed(0)
        return build_segmenter(tiny_vit(), False, seg)

    reference = fresh()
    segeval.train(reference, cfg, train_set, tmp_path / "a", torch.device("cpu"), None, log)

    class Crash(Exception):
        pass

    def crash_after_checkpoint(boundary):
        if boundary.checkpointed:
            raise Crash

    with pytest.raises(Crash):
        segeval.train(
            fresh(),
            cfg,
            train_set,
            tmp_path / "b",
            torch.device("cpu"),
            None,
            log,
            hooks=[crash_after_checkpoint],
        )
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["iteration"] == 2
    torch.manual_seed(123)  # the global RNG must come from the checkpoint
    resumed = fresh()
    segeval.train(resumed, cfg, train_set, tmp_path / "b", torch.device("cpu"), None, log)
    ref_state, res_state = reference.state_dict(), resumed.state_dict()
    for name, value in ref_state.items():
        assert torch.equal(value, res_state[name]), name
    untrained = fresh().state_dict()["head.classifier.weight"]
    assert not torch.equal(ref_state["head.classifier.weight"], untrained)  # training moved it
    final = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert final["finished"] and "optimizer" not in final


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    """It holds training over images: refused, naming it, not silently replaced."""
    import logging

    import folk.evals.segmentation as segeval
    from folk.config import load_config
    from folk.engine.hooks import StopRequested, stop_after
    from folk.errors import RunDirError
    from folk.evals.upernet import build_segmenter

    root = make_ade_tree(tmp_path / "ade", n_train=3, n_val=1)
    sets = [
        f"eval.segmentation.root={root}",
        "eval.segmentation.iterations=4",
        "eval.segmentation.checkpoint_every=1",
        "eval.segmentation.batch_size=2",
        "eval.segmentation.crop_size=32",
        "eval.segmentation.channels=16",
        "eval.segmentation.scale=0",
        "data.num_workers=0",
    ]
    train_set = ADE20KSegmentation(
        root, "training", transform=SegTrainTransform(32, 0, MEAN, STD, 255)
    )
    log = logging.getLogger("test-seg-refuse")

    def train(lr: str) -> None:
        cfg = load_config(None, sets + [f"eval.segmentation.lr={lr}"])
        torch.manual_seed(0)
        model = build_segmenter(tiny_vit(), False, cfg["eval"]["segmentation"])
        segeval.train(
            model,
            cfg,
            train_set,
            tmp_path / "out",
            torch.device("cpu"),
            None,
            log,
            hooks=[stop_after(1)],
        )

    with pytest.raises(StopRequested):
        train("1.0e-3")  # checkpoint.pt after iteration 1
    with pytest.raises(RunDirError, match="checkpoint.pt"):
        train("2.0e-3")
    assert torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)["iteration"] == 1


# ---------------------------------------------------------------- end to end


def make_run_dir(tmp_path: Path, fashion_root: Path) -> Path:
    from folk.config import load_config, save_config
    from folk.models import build_backbone

    cfg = load_config(None, tiny_overrides(fashion_root) + ["model.patch_size=4", "model.depth=2"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_config(cfg, run_dir / "config.yaml")
    torch.manual_seed(0)
    torch.save(build_backbone(cfg).state_dict(), run_dir / "backbone.pt")
    return run_dir


def eval_args(run_dir: Path, root: Path, *extra: str) -> list[str]:
    sets = [
        f"eval.segmentation.root={root}",
        "eval.segmentation.iterations=3",
        "eval.segmentation.batch_size=2",
        "eval.segmentation.crop_size=32",
        "eval.segmentation.stride=16",
        "eval.segmentation.channels=16",
        "eval.segmentation.scale=0",
        "eval.segmentation.checkpoint_every=2",
        "data.num_workers=0",
        *extra,
    ]
    args = ["eval", "segmentation", "--run", str(run_dir)]
    for s in sets:
        args += ["--set", s]
    return args


def check_metrics(path: Path, dataset: str, run_dir: Path) -> dict:
    record = json.loads(path.read_text())
    assert record["schema"] == "folk.eval/1" and record["task"] == "segmentation"
    assert record["dataset"] == dataset and record["split"] == "validation"
    assert record["primary"] == "miou" and record["run_dir"] == str(run_dir)
    assert set(record["metrics"]) == {"miou", "pixel_acc", "miou_majority", "pixel_acc_majority"}
    assert all(0 <= v <= 100 for v in record["metrics"].values())
    assert record["seed"] == 0 and record["epochs"] >= 1
    return record


def test_eval_segmentation_end_to_end_on_ade20k_layout(tmp_path, fashion_root, capsys):
    from folk.cli import main

    run_dir = make_run_dir(tmp_path, fashion_root)
    root = make_ade_tree(tmp_path / "ade", n_train=3, n_val=2)
    args = eval_args(run_dir, root)
    assert main(args) == 0
    metrics = run_dir / "eval" / "segmentation" / "metrics.json"
    record = check_metrics(metrics, "ade20k", run_dir)
    assert record["epochs"] == math.ceil(3 * 2 / 3)
    ckpt = torch.load(run_dir / "eval" / "segmentation" / "checkpoint.pt", weights_only=True)
    assert ckpt["finished"] and ckpt["iteration"] == 3
    stamp = metrics.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0  # rerun: nothing to do
    assert "nothing to do" in capsys.readouterr().err
    assert metrics.stat().st_mtime_ns == stamp


def test_eval_segmentation_end_to_end_on_the_composite_with_a_linear_head(tmp_path, fashion_root):
    from folk.cli import main

    run_dir = make_run_dir(tmp_path, fashion_root)
    root = tmp_path / "composite"
    build_composite(composite_cfg(fashion_root, root))
    args = eval_args(
        run_dir,
        root,
        "eval.segmentation.dataset=fashion_mnist_composite",
        "eval.segmentation.num_classes=11",
        "eval.segmentation.head=linear",
    )
    assert main(args + ["--variant", "linear"]) == 0
    check_metrics(
        run_dir / "eval" / "segmentation-linear" / "metrics.json",
        "fashion_mnist_composite",
        run_dir,
    )


def test_eval_segmentation_reports_bad_data_before_building_the_model(
    tmp_path, fashion_root, capsys
):
    from folk.cli import main

    run_dir = make_run_dir(tmp_path, fashion_root)
    (run_dir / "backbone.pt").unlink()  # a model build would fail on this instead
    assert main(eval_args(run_dir, tmp_path / "missing")) == 1  # DataError: exit status 1
    err = capsys.readouterr().err
    assert f"eval.segmentation.root = {tmp_path / 'missing'}: not found" in err
    root = make_ade_tree(tmp_path / "ade", n_train=1, n_val=1)
    (root / "annotations" / "validation" / "ADE_validation_00000000.png").unlink()
    assert main(eval_args(run_dir, root)) == 1
    err = capsys.readouterr().err
    assert str(root / "images" / "validation" / "ADE_validation_00000000.jpg") in err
    assert main(eval_args(run_dir, root, "eval.segmentation.stride=40")) == 2
    assert "eval.segmentation.stride" in capsys.readouterr().err
    assert main(eval_args(run_dir, root, "eval.segmentation.dataset=fashion_mnist_composite")) == 2
    assert "eval.segmentation.num_classes" in capsys.readouterr().err
    assert not (run_dir / "eval" / "segmentation" / "metrics.json").exists()


# ---------------------------------------------------------------- majority-class reference


def numpy_majority_reference(root: Path, num_classes: int) -> dict:
    """From the annotation PNGs alone (stored 0 = ignored, k = class k - 1): the training
    split's most frequent class m, then the constant prediction m on every labelled
    validation pixel: confusion matrix, IoU of every class with a non-empty union, mean."""

    def labels(split):
        for path in sorted((root / "annotations" / split).glob("*.png")):
            stored = np.asarray(Image.open(path)).astype(np.int64)
            yield stored[stored > 0] - 1  # labelled pixels only

    train_hist = sum(np.bincount(l, minlength=num_classes) for l in labels("training"))
    m = int(np.argmax(train_hist))
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for l in labels("validation"):
        np.add.at(conf, (l, np.full_like(l, m)), 1)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    ious = inter[union > 0] / union[union > 0]
    val_hist = conf.sum(1)
    return {
        "majority": m,
        "miou": 100.0 * ious.mean(),
        "pixel_acc": 100.0 * np.trace(conf) / conf.sum(),
        "val_share": val_hist[m] / val_hist.sum(),
        "n_scored": int((union > 0).sum()),
        "n_present": int((val_hist > 0).sum()),
    }


def test_majority_reference_on_the_composite_matches_numpy(tmp_path, fashion_root):
    from folk.cli import main

    run_dir = make_run_dir(tmp_path, fashion_root)
    root = tmp_path / "composite"
    build_composite(composite_cfg(fashion_root, root))
    args = eval_args(
        run_dir,
        root,
        "eval.segmentation.dataset=fashion_mnist_composite",
        "eval.segmentation.num_classes=11",
        "eval.segmentation.head=linear",
    )
    assert main(args) == 0
    record = check_metrics(
        run_dir / "eval" / "segmentation" / "metrics.json", "fashion_mnist_composite", run_dir
    )
    assert record["primary"] == "miou"
    want = numpy_majority_reference(root, 11)
    assert want["majority"] == 0  # background dominates canvases
    got = record["metrics"]
    assert got["miou_majority"] == pytest.approx(want["miou"], abs=1e-4)
    assert got["pixel_acc_majority"] == pytest.approx(want["pixel_acc"], abs=1e-4)
    # the constant background prediction scores only background, whose IoU is its share of
    # the labelled validation pixels: mIoU = share / (classes present in validation)
    assert want["n_scored"] == want["n_present"] > 1
    assert got["miou_majority"] == pytest.approx(
        100.0 * want["val_share"] / want["n_present"], abs=1e-4
    )
    assert got["pixel_acc_majority"] == pytest.approx(100.0 * want["val_share"], abs=1e-4)
    assert 0 < got["miou_majority"] < got["pixel_acc_majority"] < 100


def test_majority_reference_on_ade20k_labels_skips_ignored_pixels(tmp_path, fashion_root):
    """ADE20K labels (stored 0 = ignored): class 42 is made the training majority; in
    validation it fills a quarter of each image and another quarter is ignored, so counting
    ignored pixels would change both numbers."""
    from folk.cli import main

    run_dir = make_run_dir(tmp_path, fashion_root)
    root = make_ade_tree(tmp_path / "ade", n_train=2, n_val=2, seed=3)
    for split in ("training", "validation"):
        for path in (root / "annotations" / split).glob("*.png"):
            stored = np.asarray(Image.open(path)).copy()
            h = stored.shape[0]
            stored[: h // 2 if split == "training" else h // 4] = 43  # class 42
            if split == "validation":
                stored[h // 4 : h // 2] = 0  # ignored
            Image.fromarray(stored, mode="L").save(path)
    assert main(eval_args(run_dir, root)) == 0
    got = json.loads((run_dir / "eval" / "segmentation" / "metrics.json").read_text())
    want = numpy_majority_reference(root, 150)
    assert want["majority"] == 42 and 0.3 < want["val_share"] < 0.6
    assert want["n_scored"] == want["n_present"] > 100
    assert got["metrics"]["miou_majority"] == pytest.approx(want["miou"], abs=1e-4)
    assert got["metrics"]["pixel_acc_majority"] == pytest.approx(want["pixel_acc"], abs=1e-4)
    assert got["metrics"]["pixel_acc_majority"] == pytest.approx(
        100.0 * want["val_share"], abs=1e-4
    )
