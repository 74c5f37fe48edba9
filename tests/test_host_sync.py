"""No host synchronisation in a training step: what the GPU would wait on, counted on the CPU.

The training loop reads values on the host only at logging steps (``_check_finite`` and
``_log``, every ``pretrain.log_every`` steps). Every step in between must only queue work:
:class:`host_sync.HostSyncCounter` records the operators that would make the host wait for a
CUDA stream (``.item()``, ``bool(t)``, data-dependent shapes, cross-device copies, tensors made
from Python data), and the steps of each variant must record none. On a GPU the same steps
also run under ``torch.cuda.set_sync_debug_mode("error")``, which raises at any real sync.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from folk import filters
from host_sync import HostSyncCounter

# the step's two paths (reconstruction, distillation) and three of its filters
STEP_VARIANTS = ("folk", "mfm", "mfm_comrcom", "dino_2view")


def _trainer(cfg: dict, run_dir):
    from folk.engine.pretrain import Pretrainer, param_groups

    trainer = Pretrainer(cfg, run_dir)
    trainer.setup()
    if trainer.device.type == "cpu":
        # On CUDA the trainer's AdamW is the fused one. On the CPU it is the per-tensor loop,
        # which reads its step counters with .item(); those live on the host whatever the
        # device (torch keeps them there unless fused or capturable), so they are host data,
        # not a sync, but this counter cannot tell them from device tensors. The fused CPU
        # optimiser runs the update the GPU runs.
        trainer.optimizer = torch.optim.AdamW(
            param_groups(trainer.student, trainer.p["no_wd_tokens"]),
            lr=0.0,
            betas=tuple(trainer.p["betas"]),
            fused=True,
        )
    trainer.sampler.set_epoch(0, 0)
    return trainer


@contextmanager
def _cuda_sync_errors(device: torch.device):
    """On a GPU, every real synchronisation raises inside the block."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def _count_step_syncs(trainer, steps: int) -> HostSyncCounter:
    batches = iter(trainer.loader)
    # the first step creates the optimiser's state (and cuFFT its plans): once per run
    trainer._train_iteration(trainer._next_iteration(batches), 0)
    trainer.iteration += 1
    counter = HostSyncCounter()
    for _ in range(steps):
        micro = trainer._next_iteration(batches)  # the loader's copy to the device: not a step
        with _cuda_sync_errors(trainer.device), counter:
            trainer._train_iteration(micro, 0)
        trainer.iteration += 1
    return counter


def _assert_step_has_no_host_sync(cfg: dict, run_dir, variant: str) -> None:
    trainer = _trainer(cfg, run_dir)
    counter = _count_step_syncs(trainer, steps=2)
    assert (
        not counter.events
    ), f"{variant}: {len(counter.events)} host syncs in two steps:\n{counter.report()}"


def _step_config(tiny_cfg, variant: str) -> dict:
    # clipping on, as in every recipe (the tiny run's default leaves it off)
    return tiny_cfg(f"pretrain.variant={variant}", "pretrain.clip_grad=3.0")


@pytest.mark.parametrize("variant", STEP_VARIANTS)
def test_training_step_has_no_host_sync(tiny_cfg, tmp_path, variant, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU form everywhere
    _assert_step_has_no_host_sync(_step_config(tiny_cfg, variant), tmp_path, variant)


@pytest.mark.cuda
@pytest.mark.parametrize("variant", STEP_VARIANTS)
def test_training_step_has_no_host_sync_on_cuda(tiny_cfg, tmp_path, variant):
    _assert_step_has_no_host_sync(_step_config(tiny_cfg, variant), tmp_path, variant)


# ------------------------------------------------------------------------------ the filters


def _clear_filter_caches() -> None:
    for cached in (
        filters._device_long_table,
        filters._half_layout,
        filters._mfm_masks,
        filters._own_draw,
    ):
        cached.cache_clear()


def _filter_calls(x: torch.Tensor, g: torch.Generator):
    kwargs = dict(portions=(0.005, 0.01, 0.05), radius=4.0, patch_size=4)
    for name in filters.FILTER_NAMES:
        yield name, lambda name=name: filters.apply_filter(name, x, generator=g, **kwargs)
    yield (
        "com_rcom per channel",
        lambda: filters.com_rcom(x, [0.01, 0.05], 0.5, g, per_channel=True),
    )
    b = x.shape[0]
    yield "informed_masks(q)", lambda: filters.informed_masks(x, 0.05)
    yield "informed_masks(list)", lambda: filters.informed_masks(x, [0.01, 0.05] * (b // 2))
    q = torch.full((b,), 0.05, device=x.device)
    yield "informed_masks(tensor)", lambda: filters.informed_masks(x, q)


def _assert_filters_have_no_host_sync(device: torch.device) -> None:
    x = torch.rand((4, 3, 17, 16), generator=torch.Generator().manual_seed(0)).to(device)
    g = torch.Generator(device=device).manual_seed(1)
    _clear_filter_caches()
    for name, call in _filter_calls(x, g):
        for attempt in ("first call, empty caches", "second call"):
            counter = HostSyncCounter()
            with _cuda_sync_errors(device), counter:
                call()
            assert not counter.events, f"{name}, {attempt}:\n{counter.report()}"


def test_filters_have_no_host_sync():
    """Not even on a first call: the constant tables are written on the device by kernels."""
    _assert_filters_have_no_host_sync(torch.device("cpu"))


@pytest.mark.cuda
def test_filters_have_no_host_sync_on_cuda():
    _assert_filters_have_no_host_sync(torch.device("cuda"))


def test_the_counter_sees_what_would_synchronise():
    """The counter itself: each kind of operation it is meant to catch is caught."""
    x = torch.rand(8)
    cases = {
        "item": lambda: x.sum().item(),
        "bool": lambda: bool(x.sum() > 0),
        "equal": lambda: torch.equal(x, x),
        "nonzero": lambda: (x > 0.5).nonzero(),
        "boolean mask": lambda: x[x > 0.5],
        "python data": lambda: torch.tensor([1, 2, 3]),
        "list index": lambda: x[[0, 2]],
        "scalar store": lambda: x.clone().__setitem__(0, 1.0),
        "backward read": lambda: _backward_with_item(),
    }
    for name, call in cases.items():
        with HostSyncCounter() as counter:
            call()
        assert counter.events, f"{name} was not seen"
    with HostSyncCounter() as counter:  # work that only queues kernels
        y = torch.where(x > 0.5, x, 0.0) * 2 + torch.full((), 3.0)
        y.topk(3).values.cumsum(0)
    assert not counter.events, counter.report()


class _ReadsInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * float(grad.sum())  # a host read inside autograd's backward


def _backward_with_item() -> None:
    t = torch.rand(3, requires_grad=True)
    _ReadsInBackward.apply(t).sum().backward()


def _assert_device_photometric_has_no_host_sync(device: torch.device, monkeypatch) -> None:
    """The device-side augmentation (augment.photometric: device) queues kernels only: its
    parameter rows arrive with the batch, its constants are made by kernels."""
    from folk.data import photometric
    from folk.data.photometric import ViewSpec, apply_photometric, draw_params

    spec = ViewSpec(
        dict(
            color_jitter_prob=0.8,
            brightness=0.4,
            contrast=0.4,
            saturation=0.2,
            hue=0.1,
            grayscale_prob=0.2,
        ),
        3,
        blur_p=0.5,
        solarize_p=0.2,
    )
    gen = torch.Generator().manual_seed(0)
    rows = torch.stack([draw_params(spec, gen) for _ in range(8)]).to(device)
    crops = torch.randint(0, 256, (8, 3, 24, 24), generator=gen, dtype=torch.uint8).to(device)
    if device.type == "cpu":  # the accelerator's branch, run on the CPU
        monkeypatch.setattr(photometric, "_on_host", lambda t: False)
    for attempt in ("first call", "second call"):
        counter = HostSyncCounter()
        with _cuda_sync_errors(device), counter:
            apply_photometric(photometric.to_unit_float(crops), rows, 5)
        assert not counter.events, f"{attempt}:\n{counter.report()}"


def test_device_photometric_has_no_host_sync(monkeypatch):
    _assert_device_photometric_has_no_host_sync(torch.device("cpu"), monkeypatch)


@pytest.mark.cuda
def test_device_photometric_has_no_host_sync_on_cuda(monkeypatch):
    _assert_device_photometric_has_no_host_sync(torch.device("cuda"), monkeypatch)
