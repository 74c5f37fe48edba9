"""Shared fixtures: real Fashion-MNIST (Debian package dataset-fashion-mnist) in a tmp root,
and tiny configurations that exercise the real code paths in seconds on CPU."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FASHION_SOURCE = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
REPO = Path(__file__).resolve().parents[1]
# Fashion-MNIST replicated to three channels, and a two-block ViT at 32 px with patch 4
RGB_STATS = ["data.in_chans=3", "data.mean=[0.286, 0.286, 0.286]", "data.std=[0.353, 0.353, 0.353]"]
TINY_VIT = ["model.patch_size=4", "model.depth=2"]


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.cuda`` tests need a GPU: skipped, saying so, on a machine without one."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False")
    for item in cuda_items:
        item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: the evaluation tests share two cores with CI."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_overrides(root: Path) -> list[str]:
    """A ViT small enough for one CPU step in well under a second."""
    return [
        "data.dataset=fashion_mnist",
        f"data.root={root}",
        "data.num_classes=10",
        "data.train_subset=64",
        "data.test_subset=40",
        "data.num_workers=0",
        "model.arch=vit_tiny_patch16_224",
        "model.img_size=32",
        "model.patch_size=8",
        "model.depth=1",
        "model.embed_dim=32",
        "model.num_heads=2",
        "model.head_out_dim=64",
        "model.head_hidden_dim=32",
        "model.head_bottleneck_dim=16",
        "filter.mfm_radius=16",
        "filter.patch_mask_size=56",
        "pretrain.epochs=2",
        "pretrain.batch_size=16",
        "pretrain.warmup_epochs=1",
        "pretrain.warmup_teacher_temp_epochs=1",
        "pretrain.log_every=1",
        "pretrain.checkpoint_every=2",
        "pretrain.deterministic=true",
        "eval.batch_size=32",
    ]


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path:
    if not all((FASHION_SOURCE / f).is_file() for f in FASHION_FILES):
        pytest.skip(
            f"Fashion-MNIST not installed at {FASHION_SOURCE} "
            f"(apt-get install dataset-fashion-mnist)"
        )
    root = tmp_path_factory.mktemp("fashion-mnist")
    for name in FASHION_FILES:
        shutil.copy(FASHION_SOURCE / name, root / name)
    return root


@pytest.fixture
def tiny_cfg(fashion_root):
    from folk.config import load_config

    def make(*extra: str) -> dict:
        return load_config(None, tiny_overrides(fashion_root) + list(extra))

    return make


@pytest.fixture(scope="session")
def tiny_workflow_run(tmp_path_factory) -> Path:
    """The tiny workflow (params/test_tiny.yaml) run to its end once per session, in a copy of
    the repository's workflow: the slowest set-up of the suite (minutes), shared by the tests
    that read a finished pipeline. Each takes its own copy (copy_finished_workflow), so that
    what one changes the other never sees."""
    from test_workflow import copy_workflow, snakemake  # noqa: PLC0415  a test module's helpers

    wf = copy_workflow(tmp_path_factory.mktemp("tiny-run") / "wf")
    res = snakemake(wf, "--cores", "2", "--configfile", "params/test_tiny.yaml", timeout=1800)
    assert res.returncode == 0, res.stderr[-5000:]
    return wf


def copy_finished_workflow(src: Path, dst: Path) -> Path:
    """A copy of a finished workflow directory that Snakemake sees as finished too: Snakemake's
    metadata (.snakemake), the modification times and the links (each rule's log is a link to
    its .all file) kept as they are."""
    shutil.copytree(src, dst, symlinks=True)
    return dst
