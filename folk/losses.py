"""FOLK's two losses (spec, section 3): frequency reconstruction and DINO distillation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("global", "per_image")
CENTERINGS = ("center", "sinkhorn_knopp")


def frequency_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, reduction: str = "global"
) -> torch.Tensor:
    """Masked-frequency reconstruction loss: MFM's ``FrequencyLoss`` (gamma 1, no spectrum
    weighting) with the "masked" recovery target.

    ``pred``, ``target``: (B, C, H, W); ``target`` is the normalised *unfiltered* view.
    ``mask``: (B, 1, H, W) or (B, C, H, W) in the centred layout (zero frequency at
    (H//2, W//2)), 1 = kept (visible to the student), 0 = masked, as the filters return it.

    The distance is the complex modulus |F(pred)(k) - F(target)(k)| under the orthonormal
    FFT, averaged over channels and over the frequencies with mask == 0.

    ``reduction``:
    - ``"global"`` (default, MFM's reference): one masked mean over the whole batch, i.e.
      sum over images, channels and masked frequencies divided by the number of such
      (image, channel, frequency) terms. Images with more masked frequencies weigh more.
    - ``"per_image"``: masked mean per image, then the plain mean over the batch.
    In both, an image whose mask has no masked frequency contributes zero (and a batch with
    none at all gives 0 with zero gradients, never NaN).

    Computed in fp32 under autocast. The FFT is taken once, of the difference (linearity).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"frequency_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}"
        )
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(
            f"frequency_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} must be "
            "the same (B, C, H, W) shape"
        )
    b, c, h, w = pred.shape
    if (
        mask.dim() != 4
        or mask.shape[0] != b
        or mask.shape[1] not in (1, c)
        or mask.shape[-2:] != (h, w)
    ):
        raise ValueError(
            f"frequency_loss: mask {tuple(mask.shape)} does not match (B, 1 or C, H, W) = "
            f"({b}, 1 or {c}, {h}, {w})"
        )
    with torch.autocast(device_type=pred.device.type, enabled=False):
        difference = torch.fft.fft2(pred.float() - target.float(), norm="ortho")
        distance = difference.abs()  # autograd gives 0 (not NaN) at a zero difference
        # The mask is small next to the spectrum: move it to the unshifted layout instead.
        weight = (1.0 - torch.fft.ifftshift(mask.float(), dim=(-2, -1))).expand(b, c, h, w)
        if reduction == "global":
            return (distance * weight).sum() / weight.sum().clamp_min(
                torch.finfo(torch.float32).tiny
            )
        per_image = (distance * weight).flatten(1).sum(1)
        terms = weight.flatten(1).sum(1).clamp_min(torch.finfo(torch.float32).tiny)
        return (per_image / terms).mean()


class DistillationLoss(nn.Module):
    """DINO's cross-entropy between a centred, sharpened teacher and the student.

    ``forward(student_out, teacher_out, teacher_temp)``: ``teacher_out[j]`` holds the teacher
    logits (B, out_dim) of original global view j, ``student_out[i]`` the student logits of
    view i. Student view i is paired with every teacher view j != i: with two global views the
    masked u is matched to the teacher's v and the masked v to u (cross-view), and student views
    beyond the teacher's count (multi-crop local views) meet every teacher view.

    Per pair, ``-sum(P_t * log_softmax(s / student_temp))`` averaged over the batch, with
    ``P_t = softmax((t - center) / teacher_temp)`` detached; the loss is the mean over pairs.
    The centre moves once per optimiser step: ``center = m * center + (1 - m) * mean of the
    teacher rows`` (of every process when torch.distributed is initialised). Each forward adds
    its teacher rows to an accumulator; :meth:`apply_center_update` applies the EMA with their
    mean and empties it. With ``defer_center_update=False`` (the default) every forward is its
    own step and calls it at once; the training loop defers it so that gradient accumulation
    over micro-batches moves the centre as one large batch would (DINO: once per step).
    The accumulator is not part of ``state_dict``: it is empty at every step boundary.

    ``centering="sinkhorn_knopp"`` (DINOv2's alternative, an option here): ``P_t`` is instead
    the Sinkhorn-Knopp normalisation of ``exp(t / teacher_temp)`` over all teacher rows of
    all processes (each row sums to 1, each prototype receives an equal share of the batch),
    and the centre is not used. Equal shares rule out the one-prototype solution within
    every batch, without the lag of an EMA centre.
    """

    center: torch.Tensor
    diagnostics: dict[str, torch.Tensor]

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: str = "center",
        sinkhorn_iterations: int = 3,
        defer_center_update: bool = False,
    ) -> None:
        super().__init__()
        if centering not in CENTERINGS:
            raise ValueError(
                f"DistillationLoss: centering must be one of {CENTERINGS}, got {centering!r}"
            )
        if sinkhorn_iterations < 1:
            raise ValueError(
                f"DistillationLoss: sinkhorn_iterations must be >= 1, got {sinkhorn_iterations}"
            )
        self.centering = centering
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        if out_dim < 1:
            raise ValueError(f"DistillationLoss: out_dim must be >= 1, got {out_dim}")
        if not student_temp > 0:
            raise ValueError(f"DistillationLoss: student_temp must be > 0, got {student_temp}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(
                f"DistillationLoss: center_momentum must be in [0, 1], got {center_momentum}"
            )
        self.out_dim = out_dim
        self.student_temp = float(student_temp)
        self.center_momentum = float(center_momentum)
        self.diagnostics = {}  # of the last call: teacher_entropy, kl (detached)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.defer_center_update = bool(defer_center_update)
        # sum of the teacher rows since the last update and their count, in one tensor so
        # that one all-reduce serves both; not persistent (empty at checkpoints)
        self.register_buffer("_center_accumulator", torch.zeros(1, out_dim + 1), persistent=False)
        self._accumulated_calls = 0

    def forward(
        self,
        student_out: Sequence[torch.Tensor],
        teacher_out: Sequence[torch.Tensor],
        teacher_temp: float,
    ) -> torch.Tensor:
        if not teacher_temp > 0:
            raise ValueError(f"DistillationLoss: teacher_temp must be > 0, got {teacher_temp}")
        pairs = [(i, j) for j in range(len(teacher_out)) for i in range(len(student_out)) if i != j]
        if not pairs:
            raise ValueError(
                f"DistillationLoss: {len(student_out)} student and {len(teacher_out)} teacher views "
                "give no cross-view pair (one-view variants have no distillation)"
            )
        for t in (*student_out, *teacher_out):
            if t.dim() != 2 or t.shape[1] != self.out_dim:
                raise ValueError(
                    f"DistillationLoss: expected logits of shape (B, {self.out_dim}), got {tuple(t.shape)}"
                )
        device_type = teacher_out[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            teacher = [t.detach().float() for t in teacher_out]
            if self.centering == "sinkhorn_knopp":
                targets = list(
                    sinkhorn_knopp(
                        torch.cat(teacher), teacher_temp, self.sinkhorn_iterations
                    ).split([t.shape[0] for t in teacher])
                )
            else:
                targets = [F.softmax((t - self.center) / teacher_temp, dim=-1) for t in teacher]
            log_probs = [F.log_softmax(s.float() / self.student_temp, dim=-1) for s in student_out]
            total = sum(-(targets[j] * log_probs[i]).sum(dim=-1).mean() for i, j in pairs)
            loss = total / len(pairs)
            with torch.no_grad():
                entropy = [torch.special.entr(p).sum(dim=-1).mean() for p in targets]
                pair_entropy = sum(entropy[j] for _, j in pairs) / len(pairs)
            # cross-entropy = H(P_t) + KL(P_t || P_s): a teacher entropy near log K with a
            # small KL is the uniform collapse, an entropy near 0 the one-prototype collapse
            self.diagnostics = {"teacher_entropy": pair_entropy, "kl": loss.detach() - pair_entropy}
            if self.centering == "center":
                self.accumulate_center(torch.cat(teacher))
                if not self.defer_center_update:
                    self.apply_center_update()
        return loss

    @torch.no_grad()
    def accumulate_center(self, teacher_rows: torch.Tensor) -> None:
        """Add (detached) teacher rows to the next centre update."""
        rows = teacher_rows.detach().float()
        self._center_accumulator[:, :-1] += rows.sum(dim=0, keepdim=True)
        self._center_accumulator[:, -1] += rows.shape[0]
        self._accumulated_calls += 1

    @torch.no_grad()
    def apply_center_update(self) -> None:
        """One EMA step of the centre with the mean of every row accumulated since the last
        call, over every process; then empty the accumulator. Call it once per optimiser
        step on every process (it all-reduces). A no-op when nothing was accumulated, and
        with Sinkhorn-Knopp centring (no centre)."""
        if self.centering != "center" or self._accumulated_calls == 0:
            return
        total = self._center_accumulator
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
        mean = total[:, :-1] / total[:, -1:]
        self.center.mul_(self.center_momentum).add_(mean, alpha=1.0 - self.center_momentum)
        total.zero_()
        self._accumulated_calls = 0


def _logsumexp_over_rows(x: torch.Tensor) -> torch.Tensor:
    """log(sum over dim 0 of exp(x)), the rows of every process included."""
    peak = x.max(dim=0, keepdim=True).values
    distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    total = torch.exp(x - peak).sum(dim=0, keepdim=True)
    if distributed:
        dist.all_reduce(total)
    return peak + torch.log(total)


@torch.no_grad()
def sinkhorn_knopp(
    teacher_logits: torch.Tensor, teacher_temp: float, iterations: int = 3
) -> torch.Tensor:
    """Targets (B, K) whose rows sum to 1 and whose columns approach equal mass B / K.

    ``exp(logits / temp)`` is alternately rescaled so that every prototype holds 1/K of the
    total mass and every row 1/B of it (DINOv2's ``sinkhorn_knopp_teacher``; SwAV), ``B``
    counting the rows of every process; the rows are then scaled to sum to 1. Computed in
    the log domain: a sharp teacher (logit range / temperature in the hundreds) would
    underflow ``exp`` in fp32.
    """
    log_q = teacher_logits.float() / teacher_temp
    for _ in range(iterations):
        log_q = log_q - _logsumexp_over_rows(log_q)  # each prototype: the same mass
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)  # each row: the same mass
    return torch.exp(log_q)
