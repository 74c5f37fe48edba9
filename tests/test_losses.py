"""Losses checked against explicit numpy loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from folk.losses import DistillationLoss, frequency_loss

torch.set_num_threads(1)


# ------------------------------------------------------------------------------ frequency loss


def numpy_frequency_loss(pred, target, centred_mask, reduction="global"):
    """Explicit loops over images, channels and frequencies; mask given in the centred layout."""
    pred, target, centred_mask = (
        np.asarray(a, dtype=np.float64) for a in (pred, target, centred_mask)
    )
    b, c, h, w = pred.shape
    mask = np.fft.ifftshift(centred_mask, axes=(-2, -1))  # to the layout of np.fft.fft2
    total, terms = 0.0, 0
    per_image = []
    for n in range(b):
        image_total, image_terms = 0.0, 0
        for ch in range(c):
            fp = np.fft.fft2(pred[n, ch], norm="ortho")
            ft = np.fft.fft2(target[n, ch], norm="ortho")
            m = mask[n, ch if mask.shape[1] == c else 0]
            for i in range(h):
                for j in range(w):
                    if m[i, j] == 0:
                        image_total += abs(fp[i, j] - ft[i, j])
                        image_terms += 1
        total += image_total
        terms += image_terms
        per_image.append(image_total / image_terms if image_terms else 0.0)
    if reduction == "global":
        return total / terms if terms else 0.0
    return float(np.mean(per_image))


def random_masks(shape, keep_prob, seed):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) < keep_prob).astype(np.float32)


@pytest.mark.parametrize(
    "shape,mask_channels", [((3, 3, 16, 16), 1), ((2, 3, 15, 13), 1), ((2, 3, 12, 9), 3)]
)
@pytest.mark.parametrize("reduction", ["global", "per_image"])
def test_frequency_loss_matches_numpy_loops(shape, mask_channels, reduction):
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(shape, generator=gen)
    target = torch.randn(shape, generator=gen)
    b, _, h, w = shape
    mask = random_masks((b, mask_channels, h, w), keep_prob=0.7, seed=1)
    mask[0] = 1.0  # first image: nothing masked, contributes nothing
    mask[-1, :, : h // 2] = 0.0  # last image: many masked frequencies (weighs more globally)
    result = frequency_loss(pred, target, torch.from_numpy(mask), reduction=reduction)
    expected = numpy_frequency_loss(pred.numpy(), target.numpy(), mask, reduction)
    assert result.dtype == torch.float32 and result.dim() == 0
    assert result.item() == pytest.approx(expected, rel=1e-5)


def test_frequency_loss_reductions_differ_and_default_is_global():
    gen = torch.Generator().manual_seed(1)
    pred, target = (
        torch.randn((2, 3, 8, 8), generator=gen),
        torch.randn((2, 3, 8, 8), generator=gen),
    )
    mask = torch.ones((2, 1, 8, 8))
    mask[0, 0, :2] = 0  # 16 masked frequencies
    mask[1, 0, :6] = 0  # 48 masked frequencies
    default = frequency_loss(pred, target, mask)
    assert default.item() == pytest.approx(
        numpy_frequency_loss(pred, target, mask.numpy(), "global"), rel=1e-5
    )
    per_image = frequency_loss(pred, target, mask, reduction="per_image")
    assert per_image.item() == pytest.approx(
        numpy_frequency_loss(pred, target, mask.numpy(), "per_image"), rel=1e-5
    )
    assert default.item() != pytest.approx(per_image.item(), rel=1e-3)


def test_frequency_loss_hand_made_dc_only_difference():
    # a constant offset d in one channel changes only the zero frequency: |D(0)| = d * sqrt(HW)
    target = torch.rand((1, 3, 10, 12))
    pred = target.clone()
    pred[:, 1] += 0.5
    dc_masked = torch.ones((1, 1, 10, 12))
    dc_masked[0, 0, 5, 6] = 0  # centred layout: DC sits at (H//2, W//2)
    expected = 0.5 * (10 * 12) ** 0.5 / 3  # mean over 3 channels of the one masked frequency
    assert frequency_loss(pred, target, dc_masked).item() == pytest.approx(expected, rel=1e-5)
    corner_masked = torch.ones((1, 1, 10, 12))
    corner_masked[0, 0, 0, 0] = 0  # a Nyquist frequency: no difference there
    assert frequency_loss(pred, target, corner_masked).item() == pytest.approx(0.0, abs=1e-5)


def test_frequency_loss_no_masked_frequency_is_zero_without_nan():
    pred = torch.randn((2, 3, 8, 8), requires_grad=True)
    target = torch.randn((2, 3, 8, 8))
    for reduction in ("global", "per_image"):
        loss = frequency_loss(pred, target, torch.ones((2, 1, 8, 8)), reduction=reduction)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(grad).all() and (grad == 0).all()
    # zero difference on masked frequencies: the modulus' gradient must stay finite
    same = target.clone().requires_grad_(True)
    loss = frequency_loss(same, target, torch.zeros((2, 1, 8, 8)))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(same.grad).all()


def test_frequency_loss_gradient_and_autocast():
    gen = torch.Generator().manual_seed(2)
    pred = torch.randn((2, 3, 9, 9), generator=gen)
    target = torch.randn((2, 3, 9, 9), generator=gen)
    mask = torch.from_numpy(random_masks((2, 1, 9, 9), 0.5, seed=3))
    reference = frequency_loss(pred, target, mask)
    pred16 = pred.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = frequency_loss(pred16, target.to(torch.bfloat16), mask)
    assert loss.dtype == torch.float32
    exact = frequency_loss(pred16.detach().float(), target.to(torch.bfloat16).float(), mask)
    assert loss.item() == pytest.approx(exact.item(), rel=1e-6)
    assert loss.item() == pytest.approx(reference.item(), rel=2e-2)
    loss.backward()
    assert pred16.grad is not None and pred16.grad.abs().sum() > 0


def test_frequency_loss_rejects_mismatched_shapes():
    x = torch.zeros((2, 3, 8, 8))
    with pytest.raises(ValueError, match="mask"):
        frequency_loss(x, x, torch.zeros((2, 2, 8, 8)))
    with pytest.raises(ValueError, match="same"):
        frequency_loss(x, x[:, :2], torch.zeros((2, 1, 8, 8)))
    with pytest.raises(ValueError, match="reduction"):
        frequency_loss(x, x, torch.zeros((2, 1, 8, 8)), reduction="sum")


# ------------------------------------------------------------------------------ distillation


def numpy_dino(students, teachers, center, teacher_temp, student_temp=0.1, momentum=0.9):
    """Returns (loss, new_center) with explicit loops over pairs and rows."""
    students = [np.asarray(s, dtype=np.float64) for s in students]
    teachers = [np.asarray(t, dtype=np.float64) for t in teachers]
    total, pairs = 0.0, 0
    for j, t in enumerate(teachers):
        for i, s in enumerate(students):
            if i == j:
                continue
            rows = []
            for r in range(t.shape[0]):
                z = (t[r] - center[0]) / teacher_temp
                p = np.exp(z - z.max())
                p /= p.sum()
                y = s[r] / student_temp
                log_q = y - y.max() - np.log(np.exp(y - y.max()).sum())
                rows.append(-(p * log_q).sum())
            total += np.mean(rows)
            pairs += 1
    all_rows = np.concatenate(teachers)
    new_center = momentum * center + (1 - momentum) * all_rows.mean(axis=0, keepdims=True)
    return total / pairs, new_center


def numpy_teacher_entropy(teachers, center, teacher_temp, n_students):
    """Entropy of the centred, sharpened teacher, averaged over rows and cross-view pairs."""
    values = []
    for j, t in enumerate(teachers):
        for i in range(n_students):
            if i == j:
                continue
            rows = []
            for r in range(t.shape[0]):
                z = (np.asarray(t[r], dtype=np.float64) - center[0]) / teacher_temp
                p = np.exp(z - z.max())
                p /= p.sum()
                rows.append(-sum(pk * np.log(pk) for pk in p if pk > 0))
            values.append(np.mean(rows))
    return float(np.mean(values))


def logits(n_views, batch, dim, seed, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    return [
        (scale * torch.randn((batch, dim), generator=gen)).requires_grad_(True)
        for _ in range(n_views)
    ]


@pytest.mark.parametrize("n_students", [2, 4])
def test_distillation_matches_numpy_over_two_steps(n_students):
    dim, batch = 16, 5
    criterion = DistillationLoss(dim, student_temp=0.1, center_momentum=0.9)
    assert torch.equal(criterion.center, torch.zeros(1, dim))
    center = np.zeros((1, dim))
    for step, temp in enumerate((0.04, 0.07)):
        students = logits(n_students, batch, dim, seed=10 + step)
        teachers = logits(2, batch, dim, seed=20 + step)
        loss = criterion(students, teachers, temp)
        previous = center
        expected, center = numpy_dino(
            [s.detach().numpy() for s in students],
            [t.detach().numpy() for t in teachers],
            center,
            temp,
        )
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        entropy = numpy_teacher_entropy(
            [t.detach().numpy() for t in teachers], previous, temp, n_students
        )
        assert criterion.diagnostics["teacher_entropy"].item() == pytest.approx(entropy, rel=1e-5)
        assert criterion.diagnostics["kl"].item() == pytest.approx(
            expected - entropy, rel=1e-4, abs=1e-5
        )
        np.testing.assert_allclose(criterion.center.numpy(), center, rtol=1e-5, atol=1e-6)
    assert not np.allclose(center, 0)  # the second step really used a non-zero centre


def test_distillation_pairs_are_cross_view():
    # student i == teacher i would give (near) zero loss if same-view pairs were included
    dim = 8
    criterion = DistillationLoss(dim, student_temp=1.0, center_momentum=1.0)  # centre stays 0
    a = torch.tensor([[10.0] + [0.0] * (dim - 1)])
    b = torch.tensor([[0.0] * (dim - 1) + [10.0]])
    loss = criterion([a, b], [a, b], teacher_temp=1.0)
    expected, _ = numpy_dino(
        [a.numpy(), b.numpy()], [a.numpy(), b.numpy()], np.zeros((1, dim)), 1.0, 1.0, 1.0
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() > 5.0  # only the mismatched pairs (a vs b) count
    with pytest.raises(ValueError, match="no cross-view pair"):
        criterion([a], [a], teacher_temp=1.0)


def test_distillation_gradients_reach_only_students():
    dim = 12
    criterion = DistillationLoss(dim)
    students = logits(2, 4, dim, seed=1)
    teachers = logits(2, 4, dim, seed=2)
    loss = criterion(students, teachers, 0.04)
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in students)
    assert all(t.grad is None for t in teachers)
    assert not criterion.center.requires_grad and criterion.center.grad_fn is None
    assert "center" in dict(criterion.named_buffers())


def test_distillation_under_autocast_is_fp32():
    dim = 10
    students = [s.detach() for s in logits(2, 3, dim, seed=5)]
    teachers = [t.detach() for t in logits(2, 3, dim, seed=6)]
    exact = DistillationLoss(dim)(
        [s.bfloat16().float() for s in students], [t.bfloat16().float() for t in teachers], 0.05
    )
    criterion = DistillationLoss(dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = criterion([s.bfloat16() for s in students], [t.bfloat16() for t in teachers], 0.05)
    assert loss.dtype == torch.float32 and criterion.center.dtype == torch.float32
    assert loss.item() == pytest.approx(exact.item(), rel=1e-6)


def _distributed_worker(rank, world_size, init_file, rows, results):
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        torch.set_num_threads(1)
        criterion = DistillationLoss(rows[0][0].shape[1], center_momentum=0.5)
        students = [torch.zeros_like(t) for t in rows[rank]]
        criterion(students, rows[rank], 0.1)
        results[rank] = criterion.center.clone()
    finally:
        dist.destroy_process_group()


def test_distillation_centre_is_averaged_across_processes(tmp_path, monkeypatch):
    world_size, dim = 2, 6
    gen = torch.Generator().manual_seed(0)
    rows = [[torch.randn((3, dim), generator=gen) for _ in range(2)] for _ in range(world_size)]
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # loopback only: no network needed
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(
            _distributed_worker,
            args=(world_size, str(tmp_path / "init"), rows, results),
            nprocs=world_size,
        )
        results = dict(results)
    everything = torch.cat([t for per_rank in rows for t in per_rank])
    expected = 0.5 * everything.mean(dim=0, keepdim=True)
    for rank in range(world_size):
        torch.testing.assert_close(results[rank], expected, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------- Sinkhorn-Knopp centring


def numpy_sinkhorn(logits, temp, iterations):
    """SwAV/DINOv2's algorithm with explicit loops over prototypes and rows (float64)."""
    q = np.exp(np.asarray(logits, dtype=np.float64) / temp)
    b, k = q.shape
    q /= q.sum()
    for _ in range(iterations):
        for c in range(k):
            q[:, c] /= q[:, c].sum() * k
        for r in range(b):
            q[r, :] /= q[r, :].sum() * b
    return q * b


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_sinkhorn_knopp_matches_numpy(iterations):
    from folk.losses import sinkhorn_knopp

    gen = torch.Generator().manual_seed(iterations)
    t = torch.randn((12, 7), generator=gen)
    q = sinkhorn_knopp(t, 0.2, iterations)
    np.testing.assert_allclose(
        q.numpy(), numpy_sinkhorn(t.numpy(), 0.2, iterations), rtol=1e-5, atol=1e-7
    )
    torch.testing.assert_close(q.sum(dim=1), torch.ones(12))
    converged = sinkhorn_knopp(t, 1.0, 100)  # every prototype receives 12 / 7 of the mass
    torch.testing.assert_close(converged.sum(dim=0), torch.full((7,), 12 / 7), rtol=1e-4, atol=1e-4)


def test_sinkhorn_knopp_survives_a_sharp_teacher():
    from folk.losses import sinkhorn_knopp

    t = torch.tensor([[1.0, -1.0, 0.0], [1.0, -1.0, 0.5]])  # range / temp = 200: exp underflows
    q = sinkhorn_knopp(t, 0.01, 3)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(2))


def test_distillation_with_sinkhorn_knopp_targets_matches_numpy():
    dim, batch, temp = 9, 6, 0.07
    criterion = DistillationLoss(
        dim, student_temp=0.1, centering="sinkhorn_knopp", sinkhorn_iterations=3
    )
    students = logits(2, batch, dim, seed=30)
    teachers = logits(2, batch, dim, seed=31)
    loss = criterion(students, teachers, temp)
    targets = numpy_sinkhorn(torch.cat(teachers).detach().numpy(), temp, 3)
    t_u, t_v = targets[:batch], targets[batch:]
    total = 0.0
    for s, p in ((students[0], t_v), (students[1], t_u)):  # cross-view pairs
        y = s.detach().numpy().astype(np.float64) / 0.1
        for r in range(batch):
            log_q = y[r] - y[r].max() - np.log(np.exp(y[r] - y[r].max()).sum())
            total += -(p[r] * log_q).sum() / batch
    assert loss.item() == pytest.approx(total / 2, rel=1e-5)
    assert torch.equal(criterion.center, torch.zeros(1, dim))  # the EMA centre is not used
    with pytest.raises(ValueError, match="centering"):
        DistillationLoss(dim, centering="softmax")


def _sinkhorn_worker(rank, world_size, init_file, rows, results):
    from folk.losses import sinkhorn_knopp

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        torch.set_num_threads(1)
        results[rank] = sinkhorn_knopp(rows[rank], 0.1, 3)
    finally:
        dist.destroy_process_group()


def test_sinkhorn_knopp_normalises_over_all_processes(tmp_path, monkeypatch):
    from folk.losses import sinkhorn_knopp

    world_size = 2
    gen = torch.Generator().manual_seed(3)
    rows = [torch.randn((4, 5), generator=gen) for _ in range(world_size)]
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(
            _sinkhorn_worker,
            args=(world_size, str(tmp_path / "init"), rows, results),
            nprocs=world_size,
        )
        results = dict(results)
    expected = sinkhorn_knopp(torch.cat(rows), 0.1, 3)
    torch.testing.assert_close(torch.cat([results[0], results[1]]), expected, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------- centre: one update per optimiser step


def test_centre_update_once_per_step_is_independent_of_accumulation():
    """Accumulation 1 x batch 2N and 2 x batch N give the numpy EMA of all 2N rows' mean."""
    dim, n, temp = 16, 3, 0.05
    whole = DistillationLoss(dim, center_momentum=0.9, defer_center_update=True)
    split = DistillationLoss(dim, center_momentum=0.9, defer_center_update=True)
    center, per_micro = np.zeros((1, dim)), np.zeros((1, dim))
    for step in range(3):
        students = [s.detach() for s in logits(2, 2 * n, dim, seed=40 + step)]
        teachers = [t.detach() for t in logits(2, 2 * n, dim, seed=50 + step, scale=3.0 + step)]
        before = whole.center.clone()
        whole(students, teachers, temp)
        assert torch.equal(whole.center, before)  # the forward only accumulates
        whole.apply_center_update()
        for half in (slice(0, n), slice(n, 2 * n)):
            loss = split([s[half] for s in students], [t[half] for t in teachers], temp)
            # every micro-batch of the step sees the step's centre
            expected, _ = numpy_dino(
                [s[half].numpy() for s in students],
                [t[half].numpy() for t in teachers],
                center,
                temp,
            )
            assert loss.item() == pytest.approx(expected, rel=1e-5)
        split.apply_center_update()
        rows = np.concatenate([t.numpy().astype(np.float64) for t in teachers])
        center = 0.9 * center + 0.1 * rows.mean(axis=0, keepdims=True)
        for half in (slice(0, n), slice(n, 2 * n)):
            half_rows = np.concatenate([t[half].numpy().astype(np.float64) for t in teachers])
            per_micro = 0.9 * per_micro + 0.1 * half_rows.mean(axis=0, keepdims=True)
        np.testing.assert_allclose(whole.center.numpy(), center, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(split.center.numpy(), center, rtol=1e-5, atol=1e-6)
    assert not np.allclose(per_micro, center, rtol=1e-3)  # 0.9 ** accum per step differs
    split.apply_center_update()  # nothing accumulated: no move
    np.testing.assert_allclose(split.center.numpy(), center, rtol=1e-5, atol=1e-6)
    assert set(split.state_dict()) == {"center"}  # the accumulator is not checkpointed


def test_centre_state_dict_round_trip_and_sinkhorn_has_no_centre():
    dim = 8
    criterion = DistillationLoss(dim, defer_center_update=True)
    criterion(logits(2, 4, dim, seed=1), logits(2, 4, dim, seed=2), 0.04)
    criterion.apply_center_update()
    fresh = DistillationLoss(dim, defer_center_update=True)
    fresh.load_state_dict(criterion.state_dict())
    assert torch.equal(fresh.center, criterion.center)
    sk = DistillationLoss(dim, centering="sinkhorn_knopp", defer_center_update=True)
    sk(logits(2, 4, dim, seed=3), logits(2, 4, dim, seed=4), 0.04)
    sk.apply_center_update()
    assert torch.equal(sk.center, torch.zeros(1, dim))


def _deferred_worker(rank, world_size, init_file, micro_batches, results):
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        torch.set_num_threads(1)
        dim = micro_batches[0][0][0].shape[1]
        criterion = DistillationLoss(dim, center_momentum=0.5, defer_center_update=True)
        for teachers in micro_batches[rank]:
            criterion([torch.zeros_like(t) for t in teachers], teachers, 0.1)
        criterion.apply_center_update()
        results[rank] = criterion.center.clone()
    finally:
        dist.destroy_process_group()


def test_deferred_centre_is_the_mean_over_processes_and_micro_batches(tmp_path, monkeypatch):
    """Two micro-batches per process and uneven row counts: still the mean of every row."""
    world_size, dim = 2, 5
    gen = torch.Generator().manual_seed(4)
    sizes = {0: (3, 2), 1: (4, 5)}  # rows per micro-batch on each rank
    micro_batches = [
        [[torch.randn((b, dim), generator=gen) for _ in range(2)] for b in sizes[r]]
        for r in range(world_size)
    ]
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(
            _deferred_worker,
            args=(world_size, str(tmp_path / "init"), micro_batches, results),
            nprocs=world_size,
        )
        results = dict(results)
    rows = np.concatenate(
        [t.numpy().astype(np.float64) for rank in micro_batches for micro in rank for t in micro]
    )
    assert rows.shape[0] == 2 * (3 + 2 + 4 + 5)
    expected = 0.5 * rows.mean(axis=0, keepdims=True)
    for rank in range(world_size):
        np.testing.assert_allclose(results[rank].numpy(), expected, rtol=1e-5, atol=1e-6)
