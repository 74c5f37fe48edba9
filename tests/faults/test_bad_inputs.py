"""Bad inputs: every params file, configuration value, image file, folder layout and damaged
file gets a named error or a correct, documented handling (issue 12, item 7).

Each test reproduces a defect of the code before its fix; one tiny pre-training run (a few
seconds on one thread) is shared by the tests of damaged run files.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from folk.config import MAX_PARAMS_BYTES, MAX_YAML_DEPTH, load_config, load_run_config
from folk.errors import ConfigError, DamagedFileError, DataError, FolkError

from conftest import FASHION_FILES, tiny_overrides


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ 1. params files


def _laughs(levels: int = 12, width: int = 9) -> str:
    """ "Billion laughs": each level an anchor listing the previous one ``width`` times, so
    the last stands for width**levels strings. Under a free-form key, which takes any tree."""
    lines = ["slurm:", "  extra_sbatch:", '    l0: &l0 ["lol"]']
    for i in range(1, levels):
        lines.append(f"    l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


PARAMS_FILES = {
    "list": ("- pretrain\n- epochs\n", "top level must be a mapping"),
    "scalar": ("just words\n", "top level must be a mapping"),
    "syntax": ("pretrain:\n  epochs: [1, 2\n", "not valid YAML"),
    "binary": (bytes(range(256)) * 8, "not a text file"),
    "nul": ("pretrain:\n  epochs: 1\x00\n", "not valid YAML"),
    "huge": ("# padding\n" * (MAX_PARAMS_BYTES // 10 + 1), f"larger than {MAX_PARAMS_BYTES}"),
    "deep": (
        "slurm:\n  extra_sbatch:\n    x: " + "[" * 20000 + "]" * 20000 + "\n",
        f"deeper than {MAX_YAML_DEPTH}",
    ),
    "deep_mapping": (
        "slurm:\n  extra_sbatch:\n"
        + "".join("  " * (i + 2) + f"k{i}:\n" for i in range(60))
        + "  " * 62
        + "v: 1\n",
        f"deeper than {MAX_YAML_DEPTH}",
    ),
    "laughs": (_laughs(), "alias"),
    "alias": ("data:\n  mean: &m [0.5, 0.5, 0.5]\n  std: *m\n", "alias '*m'"),
}


@pytest.mark.parametrize("name", sorted(PARAMS_FILES))
def test_any_params_file_gets_a_named_error_in_bounded_time(tmp_path, name):
    content, words = PARAMS_FILES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert time.monotonic() - start < 5
    assert str(path) in str(err.value) and words in str(err.value), str(err.value)


def test_a_resolved_config_with_a_shared_value_reads_back(tmp_path):
    """Aliases are refused when read, so config.yaml must be written without them, even
    when two keys hold the same object."""
    from folk.config import save_config

    cfg = load_config(None)
    cfg["data"]["std"] = cfg["data"]["mean"]
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml")["data"]["std"] == cfg["data"]["mean"]


# ------------------------------------------------------------------ 2. values `folk config` refuses

BAD_VALUES = [
    (["experiment.seed=-1"], "experiment.seed", "-1"),
    ([f"experiment.seed={2 ** 32}"], "experiment.seed", str(2**32)),
    ([f"workflow.seeds=[1, {2 ** 32}]"], "workflow.seeds[1]", str(2**32)),
    (["data.mean=[0.5, .nan, 0.5]"], "data.mean[1]", "nan"),
    (["augment.brightness=.inf"], "augment.brightness", "inf"),
    (["augment.hue=-.inf"], "augment.hue", "-inf"),
    (["slurm.extra_sbatch={nice: .nan}"], "slurm.extra_sbatch.nice", "nan"),
    (["model.arch=vit_bsae_patch16_224"], "model.arch", "vit_bsae_patch16_224"),
    (["model.embed_dim=100"], "model.embed_dim", "100"),  # vit_base: 12 heads
    (["model.embed_dim=48", "model.num_heads=5"], "model.embed_dim", "48"),
    (["model.img_size=100"], "model.patch_size", "16"),
    (["eval.segmentation.crop_size=500"], "eval.segmentation.crop_size", "500"),
]


@pytest.mark.parametrize(
    "overrides,key,value", BAD_VALUES, ids=[" ".join(o) for o, _, _ in BAD_VALUES]
)
def test_folk_config_rejects_value_naming_key_and_value(overrides, key, value):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert f"'{key}'" in str(err.value) and value in str(err.value), str(err.value)


def test_folk_config_command_exits_2_on_a_non_finite_value(tmp_path, capsys):
    from folk.cli import main

    path = tmp_path / "params.yaml"
    path.write_text("augment:\n  contrast: .nan\n")
    assert main(["config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "augment.contrast" in err and "nan" in err


def test_edge_values_are_accepted():
    cfg = load_config(
        None,
        [
            f"experiment.seed={2 ** 32 - 1}",
            "model.arch=resnet50",
            "eval.segmentation.crop_size=500",
        ],
    )  # ResNets have no patches
    assert cfg["experiment"]["seed"] == 2**32 - 1


# ------------------------------------------------------------------ 3. a failed start


def test_a_failed_start_does_not_bind_the_run_directory(fashion_root, tmp_path):
    """The k-NN monitor reads the test split only once training has begun, after
    config.yaml was written; the corrected configuration must then run."""
    from folk.training import pretrain

    root = tmp_path / "train-only"
    root.mkdir()
    for name in FASHION_FILES[:2]:
        shutil.copy(fashion_root / name, root / name)
    run_dir = tmp_path / "run"
    base = tiny_overrides(root) + ["pretrain.max_iterations=2"]
    with pytest.raises(DataError, match="t10k-images"):
        pretrain(load_config(None, base + ["pretrain.knn_every=1"]), run_dir)
    done = pretrain(load_config(None, base), run_dir)
    assert done["iterations"] == 2
    assert load_run_config(run_dir)["pretrain"]["knn_every"] == 0


# ------------------------------------------------------------------ 4. image modes


def _luma(rgb: np.ndarray) -> np.ndarray:
    # ITU-R 601-2, as Pillow rounds it: one grey level of tolerance in the comparison
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


_RNG = np.random.default_rng(0)
_U8 = _RNG.integers(0, 256, size=(6, 5, 4), dtype=np.uint8)
_U16 = _RNG.integers(0, 65536, size=(6, 5), dtype=np.uint16)
_U16[0, :3] = [0, 65535, 32767]
_F = _RNG.random((6, 5), dtype=np.float32)
_F[0, :2] = [0.0, 1.0]
_PALETTE = _RNG.integers(0, 256, size=(256, 3), dtype=np.uint8)


def _scaled16(a):
    return np.floor(a.astype(np.float64) * 255 / 65535 + 0.5)


def _image(mode: str) -> tuple[Image.Image, np.ndarray, str]:
    """(image, expected RGB values as float, file suffix)."""
    if mode == "1":
        bits = _U8[..., 0] > 127
        return Image.fromarray(bits), np.repeat(bits[..., None] * 255.0, 3, -1), ".png"
    if mode == "L":
        return Image.fromarray(_U8[..., 0]), np.repeat(_U8[..., :1] * 1.0, 3, -1), ".png"
    if mode in ("P", "PA"):
        img = Image.fromarray(_U8[..., 0], "L").convert("P")
        img.putpalette(_PALETTE.tobytes())
        expected = _PALETTE[_U8[..., 0]] * 1.0
        if mode == "PA":  # no file format writes PA: built in memory
            img = img.convert("PA")
            img.putalpha(Image.fromarray(_U8[..., 1]))
        return img, expected, ".png"
    if mode == "RGB":
        return Image.fromarray(_U8[..., :3]), _U8[..., :3] * 1.0, ".png"
    if mode == "RGBA":  # alpha dropped
        return Image.fromarray(_U8), _U8[..., :3] * 1.0, ".png"
    if mode == "LA":
        return Image.fromarray(_U8[..., :2], "LA"), np.repeat(_U8[..., :1] * 1.0, 3, -1), ".png"
    if mode == "CMYK":
        c = _U8.astype(np.float64)
        rgb = (255 - c[..., :3]) * (255 - c[..., 3:]) / 255
        return Image.fromarray(_U8, "CMYK"), rgb, ".tiff"
    if mode == "I;16":
        img = Image.frombytes("I;16", (5, 6), _U16.astype("<u2").tobytes())
        return img, np.repeat(_scaled16(_U16)[..., None], 3, -1), ".png"
    if mode == "I":
        img = Image.fromarray(_U16.astype(np.int32))
        return img, np.repeat(_scaled16(_U16)[..., None], 3, -1), ".tiff"
    if mode == "F":
        return Image.fromarray(_F), np.repeat(np.rint(_F * 255.0)[..., None], 3, -1), ".tiff"
    raise AssertionError(mode)


MODES = ["1", "L", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK", "LA", "PA"]


@pytest.mark.parametrize("mode", MODES)
def test_every_image_mode_is_converted_to_the_dataset_channels(tmp_path, mode):
    from folk.data.classification import load_image

    img, expected, suffix = _image(mode)
    assert img.mode == mode
    if mode == "PA":  # the conversion load_image applies after decoding
        from folk.data.classification import convert_image

        load = lambda target: convert_image(img, target)  # noqa: E731
    else:
        path = tmp_path / f"image{suffix}"
        img.save(path)
        with Image.open(path) as reopened:
            assert reopened.mode == mode  # the file holds the mode under test
        load = lambda target: load_image(str(path), target)  # noqa: E731
    rgb = load("RGB")
    assert rgb.mode == "RGB"
    np.testing.assert_allclose(np.asarray(rgb, dtype=np.float64), expected, atol=1)
    grey = load("L")
    assert grey.mode == "L"
    np.testing.assert_allclose(np.asarray(grey, dtype=np.float64), _luma(expected), atol=1)


@pytest.mark.parametrize(
    "values,mode",
    [
        (np.array([[0.0, 2.5]], dtype=np.float32), "F"),
        (np.array([[0.0, np.nan]], dtype=np.float32), "F"),
        (np.array([[-5, 70000]], dtype=np.int32), "I"),
    ],
)
def test_an_image_without_a_known_scale_is_skipped_and_counted(tmp_path, caplog, values, mode):
    from folk.data import collate_skip_none
    from folk.data.classification import ImageFolderDataset

    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        Image.fromarray(_U8[..., :3]).save(tmp_path / "train" / c / "ok.png")
    bad = tmp_path / "train" / "a" / "odd.tiff"
    Image.fromarray(values, mode).save(bad)
    ds = ImageFolderDataset(tmp_path, "train", transform=lambda im: torch.zeros(1))
    with caplog.at_level(logging.WARNING, logger="folk.data"):
        batch = [ds[i] for i in range(len(ds))]
    assert str(bad) in caplog.text and "known scale" in caplog.text
    _, labels, skipped = collate_skip_none(batch)
    assert skipped == 1 and len(labels) == 2


# ------------------------------------------------------------------ 5. folder listings


def test_symlinks_never_loop_or_list_a_file_twice(tmp_path, caplog):
    from folk.data.classification import scan_split

    split = tmp_path / "train"
    for c in ("a", "b"):
        (split / c / "sub").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(_U8[..., :3]).save(split / c / f"{c}{i}.png")
        Image.fromarray(_U8[..., :3]).save(split / c / "sub" / f"{c}-deep.png")
    os.symlink("..", split / "a" / "sub" / "up")  # a loop back to class a
    os.symlink(split, split / "b" / "split")  # a loop over every class
    os.symlink(split / "a" / "a0.png", split / "b" / "again.png")  # a second name
    os.symlink(split / "a" / "missing.png", split / "b" / "dangling.png")
    with caplog.at_level(logging.WARNING, logger="folk.data"):
        classes, samples = scan_split(tmp_path, "train")
    assert classes == ["a", "b"]
    real = sorted(os.path.realpath(p) for p, _ in samples)
    assert len(real) == len(set(real)) == 6, [p for p, _ in samples]
    assert sorted(Path(p).name for p, _ in samples) == sorted(
        ["a0.png", "a1.png", "a-deep.png", "b0.png", "b1.png", "b-deep.png"]
    )
    assert all((label == 0) == (Path(p).name.startswith("a")) for p, label in samples)
    assert "again.png" in caplog.text and "dangling.png" in caplog.text


# ------------------------------------------------------------------ 6. damaged run files


@pytest.fixture(scope="module")
def finished_run(fashion_root, tmp_path_factory) -> Path:
    from folk.engine.pretrain import pretrain

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    pretrain(
        load_config(None, tiny_overrides(fashion_root) + ["pretrain.max_iterations=2"]), run_dir
    )
    return run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    return out


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 16)
    elif how == "foreign":
        torch.save({"something": torch.zeros(3)}, path)
    elif how == "not_a_dict":
        torch.save([1, 2, 3], path)
    else:
        raise AssertionError(how)


DAMAGE = ["truncated", "empty", "garbage", "foreign", "not_a_dict"]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_checkpoint_names_the_file_and_what_to_do(finished_run, tmp_path, how):
    from folk.engine.pretrain import pretrain

    run_dir = _copy(finished_run, tmp_path)
    (run_dir / "DONE.json").unlink()
    ckpt = run_dir / "checkpoints" / "last.pt"
    _damage(ckpt, how)
    with pytest.raises(DamagedFileError) as err:
        pretrain(load_run_config(run_dir), run_dir)
    assert str(ckpt) in str(err.value) and "start the run over" in str(err.value)
    if how == "foreign":  # what the message says to do works
        ckpt.unlink()
        assert pretrain(load_run_config(run_dir), run_dir)["iterations"] == 2


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_weights_name_the_file_and_what_to_do(finished_run, tmp_path, how):
    from folk.models import load_backbone

    from folk.engine.pretrain import pretrain

    run_dir = _copy(finished_run, tmp_path)
    _damage(run_dir / "backbone.pt", how)
    with pytest.raises(FolkError) as err:
        load_backbone(run_dir)
    assert str(run_dir / "backbone.pt") in str(err.value)
    assert "folk pretrain" in str(err.value) or "do not match" in str(err.value)
    if how == "truncated":  # what the message says to do works
        (run_dir / "backbone.pt").unlink()
        (run_dir / "DONE.json").unlink()
        pretrain(load_run_config(run_dir), run_dir)
        expected = torch.load(finished_run / "backbone.pt", weights_only=True)
        restored = load_backbone(run_dir)[0].state_dict()
        assert all(torch.equal(expected[k], restored[k]) for k in expected)


@pytest.mark.parametrize("how", DAMAGE + ["wrong_shapes"])
def test_a_damaged_feature_cache_is_recomputed_with_a_warning(finished_run, tmp_path, caplog, how):
    from folk.evals.features import extract_features, load_eval_backbone

    cfg = load_run_config(finished_run)
    backbone = load_eval_backbone(finished_run, cfg)
    cache = tmp_path / "eval" / "features"
    feats, labels = extract_features(backbone, cfg, "test", cache)
    (path,) = cache.glob("features-*.pt")
    if how == "wrong_shapes":
        torch.save({"features": feats[:3], "labels": labels, "skipped": torch.tensor(0)}, path)
    else:
        _damage(path, how)
    with caplog.at_level(logging.WARNING):
        again, again_labels = extract_features(backbone, cfg, "test", cache)
    assert str(path) in caplog.text and "recomputing" in caplog.text
    assert torch.equal(again, feats) and torch.equal(again_labels, labels)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        extract_features(backbone, cfg, "test", cache)  # the rewritten cache is whole
    assert "damaged" not in caplog.text
