"""One FOLK pre-training step: filter the views, run student and teacher, combine losses.

Shared by the training loop and ``folk bench`` so that what is benchmarked is what trains.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from folk.engine.device import autocast, autocast_dtype
from folk.filter_registry import filter_spec
from folk.losses import DistillationLoss, frequency_loss


class FolkObjective(nn.Module):
    """Spec section 3: L = lambda_rec * mean_views L_rec + lambda_kd * L_kd.

    A forward is one micro-batch: the DINO centre only accumulates the teacher rows, and
    :meth:`apply_center_update` must be called once per optimiser step, after the last
    micro-batch (the training loop and ``folk bench`` do).
    """

    def __init__(
        self, cfg: dict, student: nn.Module, teacher: nn.Module | None, device: torch.device
    ):
        super().__init__()

        method, p, f = cfg["method"], cfg["pretrain"], cfg["filter"]
        self.student, self.teacher = student, teacher
        self.num_views = method["num_views"]
        self.reconstruction, self.distillation = method["reconstruction"], method["distillation"]
        self.lambda_rec, self.lambda_kd = p["lambda_rec"], p["lambda_kd"]
        self.rec_reduction = p["rec_reduction"]
        self.filter_name = method["filter"]
        self.filter_spec = filter_spec(self.filter_name)
        self.filter = self.filter_spec.load()
        self.filter_kwargs = self.filter_spec.kwargs(cfg)
        self.filter_local_views = f["local_views"] == "same"
        self.cfg = cfg
        c = cfg["data"]["in_chans"]
        self.register_buffer(
            "mean", torch.tensor(cfg["data"]["mean"], device=device).view(1, c, 1, 1)
        )
        self.register_buffer(
            "std", torch.tensor(cfg["data"]["std"], device=device).view(1, c, 1, 1)
        )
        self.distill = (
            DistillationLoss(
                cfg["model"]["head_out_dim"],
                p["student_temp"],
                p["center_momentum"],
                p["centering"],
                p["sinkhorn_iterations"],
                defer_center_update=True,
            ).to(device)
            if self.distillation
            else None
        )
        self.amp_dtype = autocast_dtype(cfg["pretrain"]["amp"], device)
        self.device = device

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def local_filter_kwargs(self, size: int) -> dict:
        """The filter's arguments for views of ``size`` px: the radius and patch side scale
        with the view, as they do with ``model.img_size`` (spectral portions need nothing)."""
        return self.filter_spec.kwargs(self.cfg, size)

    @torch.no_grad()
    def apply_center_update(self) -> None:
        """Once per optimiser step: move the DINO centre with every micro-batch's teacher rows."""
        if self.distill is not None:
            self.distill.apply_center_update()

    def forward(
        self, views: list[torch.Tensor], teacher_temp: float, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``views``: global views first (in [0, 1], on the device), then local crops.

        With ``filter.local_views: same`` the local crops (all of one size) go through
        ``method.filter`` too, as one batch drawn from ``generator`` after the global views;
        reconstruction stays on the global views. With ``none`` they reach the student
        unfiltered.
        """
        n = self.num_views
        globals_ = torch.cat(views[:n])
        masked, mask = self.filter(globals_, generator=generator, **self.filter_kwargs)
        terms: dict[str, torch.Tensor] = {}
        with autocast(self.device, self.amp_dtype):
            logits, recon = self.student(self.normalize(masked))
            total = torch.zeros((), device=self.device)
            if self.reconstruction:
                targets = self.normalize(globals_).chunk(n)
                rec = (
                    sum(
                        frequency_loss(r, t, m, self.rec_reduction)
                        for r, t, m in zip(recon.chunk(n), targets, mask.chunk(n))
                    )
                    / n
                )
                terms["loss_rec"] = rec
                total = total + self.lambda_rec * rec
            if self.distillation:
                with torch.no_grad():
                    teacher_out = self.teacher(self.normalize(torch.cat(views[:2]))).chunk(2)
                student_out = list(logits.chunk(n))
                locals_ = list(views[2:])
                if locals_ and self.filter_local_views:
                    filtered, _ = self.filter(
                        torch.cat(locals_),
                        generator=generator,
                        **self.local_filter_kwargs(locals_[0].shape[-1]),
                    )
                    locals_ = list(filtered.chunk(len(locals_)))
                for local in locals_:
                    student_out.append(self.student(self.normalize(local), reconstruct=False)[0])
                kd = self.distill(student_out, list(teacher_out), teacher_temp)
                terms["loss_kd"] = kd
                terms.update(
                    {f"kd_{name}": value for name, value in self.distill.diagnostics.items()}
                )
                total = total + self.lambda_kd * kd
        terms["loss"] = total
        return total, terms
