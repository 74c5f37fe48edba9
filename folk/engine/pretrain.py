"""The pre-training loop: resumable, signal-safe, bitwise reproducible on CPU.

Run-directory contract: docs/DESIGN.md. Rank 0 writes every file.
"""

from __future__ import annotations

import json
import logging
import random
import resource
import signal
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from folk.config import RESUMABLE_CHANGES, flatten, load_run_config, save_config
from folk.data import build_dataset, collate_skip_none
from folk.data.on_device import DeviceBatches
from folk.data.transforms import PretrainViews, finish_views
from folk.engine import checkpoint as ckpt
from folk.engine.data import EpochSampler, SeededViews
from folk.engine.distributed import all_reduce_mean, barrier, host_min, init_distributed
from folk.engine.hooks import Boundary, Hook, StopRequested, call_hooks
from folk.engine.records import rewind_records
from folk.engine.step import FolkObjective
from folk.errors import ConfigError, DamagedFileError, NonFiniteLossError, RunDirError
from folk.models import build_student_teacher, ema_update, exported_metadata
from folk.schedules import pretrain_schedules
from folk.utils.io import (
    append_jsonl,
    atomic_save_safetensors,
    atomic_torch_save,
    atomic_write_json,
    read_jsonl,
)
from folk.utils.progress import progress
from folk.utils.provenance import now_iso, provenance

# what last.pt must hold (Pretrainer.state)
CHECKPOINT_KEYS = (
    "iteration",
    "student",
    "teacher",
    "optimizer",
    "scaler",
    "objective",
    "filter_generator",
    "rng",
    "sampler",
    "skipped_images",
    "elapsed_s",
)
log = logging.getLogger(__name__)


class SignalCheckpointer:
    """SIGTERM/SIGUSR1/SIGUSR2 set a flag; the loop checkpoints at the next step boundary,
    then the previous handler (submitit's, say) runs or the process exits. Never saves
    mid-step. SIGUSR2 is submitit's time-out/pre-emption signal (``--signal=USR2@delay``):
    its handler, chained after the checkpoint, requeues the job (folk.launch)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self):
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals to the host
                pass

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def uninstall(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def chain(self) -> None:
        """After the checkpoint: hand the signal to whoever had it before us."""
        signum = self.received
        previous = self.previous.get(signum)
        self.uninstall()
        if callable(previous):
            previous(signum, None)
        raise StopRequested(signum)


def check_same_run(saved: dict, cfg: dict, run_dir: Path) -> None:
    a, b = flatten(saved), flatten(cfg)
    changed = sorted(
        k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES)
    )
    if changed:
        details = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed[:6])
        if len(changed) > 6:
            details += f", and {len(changed) - 6} more: {', '.join(changed[6:])}"
        # the run's identity is its config.yaml: a run of another one is refused (a product)
        ckpt.refuse_or_discard(
            False,
            f"{run_dir} holds a run with a different configuration "
            f"({run_dir / 'config.yaml'}: {details})",
            "use another --out, or delete the directory to start over",
            log,
        )


def checkpoint_remedy(path: Path) -> str:
    return (
        f"move {path} away (or delete it) and run the same command again to start the "
        f"run over from iteration 0"
    )


def micro_batching(
    batch_size: int, world: int, accum_steps: int, max_micro: int
) -> tuple[int, int]:
    """(images per device per forward, micro-batches per optimiser step) for a global
    ``batch_size`` on ``world`` devices: the fewest accumulation steps, at least
    ``accum_steps``, that split the batch evenly with at most ``max_micro`` images per
    forward (a one-GPU run of a 2048-image batch does not try 2048 images at once)."""
    if batch_size < world * accum_steps:
        raise RunDirError(
            f"pretrain.batch_size = {batch_size} is smaller than world size "
            f"{world} x pretrain.accum_steps {accum_steps}"
        )
    for steps in range(accum_steps, batch_size // world + 1):
        if batch_size % (world * steps) == 0 and batch_size // (world * steps) <= max_micro:
            return batch_size // (world * steps), steps
    raise RunDirError(
        f"pretrain.batch_size = {batch_size} cannot be split evenly over world "
        f"size {world} in micro-batches of at most pretrain.max_micro_batch = "
        f"{max_micro} images"
    )


def param_groups(module: nn.Module, no_wd_tokens: bool = False) -> list[dict]:
    """Weight decay on weights only, not on biases, norms or 1-d embeddings (DINO, MFM);
    with ``no_wd_tokens`` not on the backbone's ``no_weight_decay()`` set either (MFM:
    pos_embed, cls_token)."""
    skip: set[str] = set()
    backbone = getattr(module, "backbone", None)
    if no_wd_tokens and hasattr(backbone, "no_weight_decay"):
        skip = {f"backbone.{name}" for name in backbone.no_weight_decay()}
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim <= 1 or name.endswith(".bias") or name in skip
        (no_decay if exempt else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}]


def clip_gradients(parameters, max_norm: float, mode: str) -> None:
    """``global``: scale every gradient by one factor so that their joint 2-norm is at most
    ``max_norm`` (MFM; torch's ``clip_grad_norm_``). ``per_param``: each gradient tensor
    whose own norm exceeds ``max_norm`` is scaled by ``max_norm / (norm + 1e-6)`` (DINO)."""
    params = [p for p in parameters if p.grad is not None]
    if mode == "global":
        nn.utils.clip_grad_norm_(params, max_norm)
        return
    grads = [p.grad for p in params]
    norms = torch._foreach_norm(grads)
    for grad, norm in zip(grads, norms):
        grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))


def _term_rank(name: str) -> int:
    return 0 if name.startswith("loss_") else 1 if name == "loss" else 2


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _progress(total: int, initial: int, enabled: bool, desc: str):
    return progress(
        total=total,
        initial=initial,
        enabled=enabled,
        unit="it",
        desc=desc,
    )


Monitor = Callable[[dict, nn.Module], dict]  # (config, backbone) -> the fields of a record


class Pretrainer:
    """The pre-training loop of one run directory. ``monitor`` measures the backbone every
    ``pretrain.knn_every`` epochs and at the initialisation (the commands give the
    evaluations' k-NN monitor, ``folk.training``); the loop only calls it. ``hooks``: called
    at every step boundary (``folk.engine.hooks``)."""

    def __init__(
        self, cfg: dict, run_dir: Path, hooks: Sequence[Hook] = (), monitor: Monitor | None = None
    ):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.p = cfg["pretrain"]
        if self.p["knn_every"] and monitor is None:
            raise ConfigError(
                f"pretrain.knn_every = {self.p['knn_every']} needs a monitor: "
                "train through folk.training.pretrain (as `folk pretrain` does), "
                "or give Pretrainer a monitor"
            )
        self.monitor = monitor
        self.hooks = tuple(hooks)
        self.ckpt_path = self.run_dir / "checkpoints" / "last.pt"
        # its identity is config.yaml beside it (check_same_run), not an entry of the file
        self.state_file = ckpt.StateFile(
            self.ckpt_path,
            identity={},
            disposable=False,
            remedy=checkpoint_remedy(self.ckpt_path),
            other="another run",
            log=log,
            required=CHECKPOINT_KEYS,
        )
        self.metrics_path = self.run_dir / "metrics.jsonl"

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        cfg, p = self.cfg, self.p
        self.dist, self.device = init_distributed()
        if p["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        seed = cfg["experiment"]["seed"]
        torch.manual_seed(seed + self.dist.rank)
        np.random.seed(seed + self.dist.rank)
        random.seed(seed + self.dist.rank)

        dataset = build_dataset(cfg, "train")  # fails at once, naming the path, if absent
        world = self.dist.world_size
        self.micro_batch, self.accum_steps = micro_batching(
            p["batch_size"], world, p["accum_steps"], p["max_micro_batch"]
        )
        per_iter = self.micro_batch * world * self.accum_steps
        if self.accum_steps > p["accum_steps"] and self.dist.is_main:
            log.info(
                "batch %s on %s device(s): %s micro-batches of %s per step "
                "(pretrain.max_micro_batch = %s)",
                p["batch_size"],
                world,
                self.accum_steps,
                self.micro_batch,
                p["max_micro_batch"],
            )
        self.iters_per_epoch = len(dataset) // per_iter
        if self.iters_per_epoch == 0:
            raise RunDirError(
                f"dataset {cfg['data']['root']} has {len(dataset)} training images,"
                f" fewer than one global batch of {per_iter}"
            )
        self.total_iters = p["epochs"] * self.iters_per_epoch
        if p["max_iterations"]:
            self.total_iters = min(self.total_iters, p["max_iterations"])
        self.images_per_iter = per_iter
        self.views = PretrainViews(cfg)
        views = SeededViews(dataset, self.views, seed)
        self.sampler = EpochSampler(
            len(dataset),
            self.iters_per_epoch * self.micro_batch * self.accum_steps,
            self.dist.rank,
            world,
            seed,
        )
        workers = cfg["data"]["num_workers"]
        if cfg["data"]["on_device"]:
            self.loader = DeviceBatches(
                dataset, self.views, self.sampler, self.micro_batch, seed, self.device
            )
        else:
            self.loader = DataLoader(
                views,
                batch_size=self.micro_batch,
                sampler=self.sampler,
                num_workers=workers,
                collate_fn=collate_skip_none,
                pin_memory=self.device.type == "cuda",
                drop_last=False,
                persistent_workers=workers > 0,
                # its own generator: iterator creation must not draw from the
                # global RNG, or a resumed run's RNG stream would shift
                generator=torch.Generator().manual_seed(seed),
                prefetch_factor=4 if workers > 0 else None,
            )

        self.student, self.teacher = build_student_teacher(cfg)
        if self.dist.enabled and self.device.type == "cuda":
            # batch statistics over the global batch (ResNet backbones, model.head_use_bn)
            self.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
            if self.teacher is not None:
                self.teacher = nn.SyncBatchNorm.convert_sync_batchnorm(self.teacher)
        self.student.to(self.device)
        if self.teacher is not None:
            self.teacher.to(self.device)
        self.objective = FolkObjective(cfg, self.student, self.teacher, self.device)
        self.student_ddp = self.student
        if self.dist.enabled:
            self.student_ddp = nn.parallel.DistributedDataParallel(
                self.student, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            self.objective.student = self.student_ddp
        if p["compile"] == "on" or (p["compile"] == "auto" and self.device.type == "cuda"):
            self.objective.student = torch.compile(self.objective.student)
            if self.teacher is not None:
                self.objective.teacher = torch.compile(self.teacher)

        self.schedules = pretrain_schedules(cfg, self.iters_per_epoch, p["batch_size"])
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            param_groups(self.student, p["no_wd_tokens"]),
            lr=0.0,
            betas=tuple(p["betas"]),
            fused=fused or None,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=p["amp"] == "fp16")
        self.filter_gen = torch.Generator(device=self.device)
        self.filter_gen.manual_seed(seed * 7919 + self.dist.rank)
        self.iteration, self.skipped, self.elapsed = 0, 0, 0.0
        self.saved_iteration: int | None = None  # of the checkpoint on disk, if any
        self.last_layer = (
            [] if self.student.dino_head is None else self.student.dino_head.last_layer_parameters()
        )

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        teacher = self.teacher.state_dict() if self.teacher is not None else {}
        return {
            "iteration": self.iteration,
            "student": self.student.state_dict(),
            "teacher": teacher,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "objective": self.objective.distill.state_dict() if self.objective.distill else {},
            "filter_generator": self.filter_gen.get_state(),
            "rng": ckpt.rng_state(),
            "sampler": {
                "seed": self.sampler.seed,
                "epoch": self.iteration // self.iters_per_epoch,
                "position": (self.iteration % self.iters_per_epoch),
            },
            "skipped_images": self.skipped,
            "elapsed_s": self.elapsed + (time.time() - self.t_start),
        }

    def save(self) -> None:
        """Checkpoint, unless the state holds a non-finite tensor: a finite loss does not
        prove the update after it finite, and last.pt must stay resumable. Every rank checks
        its own (identical) state, so that all raise together instead of waiting for rank 0."""
        state = self.state()
        bad = ckpt.first_non_finite(state)
        if bad is not None:
            it, since = self.iteration - 1, self.saved_iteration or 0
            which = f"iteration {it}" if since == it else f"one of iterations {since}-{it}"
            raise NonFiniteLossError(
                f"{bad} is non-finite after iteration {it} (the update of {which} made it so, "
                f"with every loss term finite); it is not checkpointed: {self._last_good()}"
            )
        if self.dist.is_main:
            self.state_file.save(state)
        self.saved_iteration = self.iteration
        barrier()

    def _last_good(self) -> str:
        if self.saved_iteration is None:
            return (
                f"no checkpoint was written before it ({self.ckpt_path} does not exist); "
                f"a rerun starts over"
            )
        return (
            f"the last good checkpoint {self.ckpt_path} (after {self.saved_iteration} "
            f"iterations) is left as it was"
        )

    def restore(self) -> None:
        state = self.state_file.load()
        try:
            self._restore(state)
        except (RuntimeError, KeyError, IndexError, TypeError, ValueError) as exc:
            # a checkpoint of another model or program: its tensors do not fit this run's
            detail = (str(exc).strip().splitlines() or [""])[0][:200]
            raise DamagedFileError(
                f"{self.ckpt_path}: does not fit this run's model and state "
                f"({type(exc).__name__}: {detail}); "
                f"{checkpoint_remedy(self.ckpt_path)}"
            ) from None

    def _restore(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.objective.distill is not None:
            self.objective.distill.load_state_dict(state["objective"])
        self.filter_gen.set_state(state["filter_generator"])
        ckpt.set_rng_state(state["rng"])
        self.iteration = int(state["iteration"])
        self.skipped = int(state["skipped_images"])
        self.elapsed = float(state["elapsed_s"])
        self.saved_iteration = self.iteration
        if self.dist.is_main:
            rewind_records(self.metrics_path, self.iteration)
            log.info("resumed from %s at iteration %d", self.ckpt_path, self.iteration)

    # ------------------------------------------------------------------ loop
    def _set_schedules(self, it: int) -> None:
        # python floats: numpy scalars in the optimiser state would not load weights-only
        lr, wd = float(self.schedules["lr"][it]), float(self.schedules["wd"][it])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = wd if group["apply_wd"] else 0.0

    def _train_iteration(self, micro_batches: list[list[torch.Tensor]], epoch: int) -> torch.Tensor:
        it = self.iteration
        self._set_schedules(it)
        temp = float(self.schedules["teacher_temp"][it])
        accum = len(micro_batches)
        terms_sum: dict[str, torch.Tensor] = {}
        for i, views in enumerate(micro_batches):
            sync = self.dist.enabled and i < accum - 1
            ctx = self.student_ddp.no_sync() if sync else torch.enable_grad()
            with ctx:
                loss, terms = self.objective(views, temp, self.filter_gen)
                self.scaler.scale(loss / accum).backward()
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0) + v.detach() / accum
        # one centre update per optimiser step, with every micro-batch's teacher rows
        self.objective.apply_center_update()
        self.scaler.unscale_(self.optimizer)
        if self.p["clip_grad"] > 0:
            clip_gradients(self.student.parameters(), self.p["clip_grad"], self.p["clip_mode"])
        if epoch < self.p["freeze_last_layer_epochs"]:
            for param in self.last_layer:
                param.grad = None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.teacher is not None:
            ema_update(self.teacher, self.student, float(self.schedules["momentum"][it]))
        names = sorted(terms_sum)
        self.term_names = names
        return torch.stack([terms_sum[k].float() for k in names])

    def _agreed_stop(self, handler: SignalCheckpointer, at_log: bool) -> bool:
        """Whether to checkpoint and stop now. Alone, as soon as a signal came; with several
        processes, all decide together at logging steps (a collective), so that no rank
        stops a step before the others (the signal gives minutes of warning)."""
        if not self.dist.enabled:
            return handler.received is not None
        if not at_log:
            return False

        flag = torch.tensor([handler.received or 0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if int(flag.item()) and handler.received is None:
            handler.received = int(flag.item())  # another rank got it first
        return handler.received is not None

    def _check_finite(self, buffer: list[tuple[int, torch.Tensor]]) -> None:
        """One device sync per check, not per step; names the first bad step and term."""
        if not buffer:
            return
        values = torch.stack([v for _, v in buffer])
        finite = torch.isfinite(values)
        if bool(finite.all()):
            return
        row = int((~finite).any(1).nonzero()[0])
        # a loss term, not a diagnostic: the terms say what diverged, the diagnostics of a
        # diverged term (kd_kl, ...) follow it; the total comes after its components
        bad = [c for c in range(len(self.term_names)) if not finite[row, c]]
        col = min(bad, key=lambda c: _term_rank(self.term_names[c]))
        step = buffer[row][0]
        raise NonFiniteLossError(
            f"{self.term_names[col]} = {values[row, col].item()} at iteration {step} "
            f"(epoch {step // self.iters_per_epoch}); {self._last_good()}"
        )

    def _log(self, buffer, epoch: int, images: int, seconds: float) -> dict:
        values = torch.stack([v for _, v in buffer]).mean(0)
        values = all_reduce_mean(values).tolist()
        it = self.iteration - 1
        record = {"type": "train", "epoch": epoch, "iteration": self.iteration}
        record.update({k: round(v, 6) for k, v in zip(self.term_names, values)})
        record.update(
            {
                "lr": float(self.schedules["lr"][it]),
                "wd": float(self.schedules["wd"][it]),
                "momentum": float(self.schedules["momentum"][it]),
                "teacher_temp": float(self.schedules["teacher_temp"][it]),
                "images_per_s": round(images / max(seconds, 1e-9), 2),
                "time": round(time.time(), 3),
            }
        )
        if self.dist.is_main:
            append_jsonl(self.metrics_path, record)
        return record

    def _knn_monitor(self, epoch: int) -> None:
        """An observation must not change what it observes: the monitor's data loader draws
        from the global RNGs, which the training steps after it (drop path) draw from too,
        so they are put back as they were; only rank 0 runs it."""
        if self.dist.is_main:
            rng = ckpt.rng_state()
            backbone = (self.teacher or self.student).backbone
            record = self.monitor(self.cfg, backbone)
            ckpt.set_rng_state(rng)
            record.update({"type": "knn", "epoch": epoch, "iteration": self.iteration})
            append_jsonl(self.metrics_path, record)
        barrier()

    def _next_iteration(self, batches) -> list[list[torch.Tensor]]:
        """The micro-batches of one iteration: always ``accum_steps`` loader batches, whatever
        they hold, so that iteration i starts at sample i x batch as the sampler resumes it.
        A batch without one decodable image is left out (on every rank when one rank has
        none: DDP needs every rank in each backward); no batch left: the step is skipped."""
        micro, counts = [], []
        for _ in range(self.accum_steps):
            views, labels, n_skipped = next(batches)
            self.skipped += n_skipped
            micro.append(views)
            counts.append(len(labels))
        counts = host_min(counts)
        return [
            finish_views([v.to(self.device, non_blocking=True) for v in views], self.views)
            for views, n in zip(micro, counts)
            if n > 0
        ]

    def _epoch_end(self, epoch: int) -> None:
        self._epoch_summary(epoch)
        if self.p["knn_every"] and (epoch + 1) % self.p["knn_every"] == 0:
            self._knn_monitor(epoch + 1)

    def train(self) -> dict:
        self.t_start = time.time()
        handler = SignalCheckpointer()
        handler.install()
        if self.p["knn_every"] and self.iteration == 0:
            self._knn_monitor(0)  # the initialisation: the baseline every later point beats
        try:
            while self.iteration < self.total_iters:
                epoch = self.iteration // self.iters_per_epoch
                position = self.iteration % self.iters_per_epoch
                self.sampler.set_epoch(epoch, position * self.micro_batch * self.accum_steps)
                end = min((epoch + 1) * self.iters_per_epoch, self.total_iters)
                bar = _progress(
                    end - epoch * self.iters_per_epoch,
                    position,
                    self.dist.is_main,
                    f"epoch {epoch + 1}/{self.p['epochs']}",
                )
                buffer, window_images, window_t = [], 0, time.time()
                batches = iter(self.loader)
                while self.iteration < end:
                    micro = self._next_iteration(batches)
                    if micro:
                        buffer.append((self.iteration, self._train_iteration(micro, epoch)))
                        window_images += self.images_per_iter
                    self.iteration += 1
                    bar.update(1)
                    at_log = self.iteration % self.p["log_every"] == 0 or self.iteration == end
                    at_ckpt = self.iteration % self.p["checkpoint_every"] == 0
                    stop = self._agreed_stop(handler, at_log)
                    if (at_log or at_ckpt or stop) and buffer:
                        self._check_finite(buffer)
                        rec = self._log(buffer, epoch, window_images, time.time() - window_t)
                        bar.set_postfix(loss=f"{rec['loss']:.4f}", ips=f"{rec['images_per_s']:.0f}")
                        buffer, window_images, window_t = [], 0, time.time()
                    if self.iteration % self.iters_per_epoch == 0:
                        # before the checkpoint: it then holds the epoch's records and the
                        # RNG state after them, so no stop can fall between the two
                        self._epoch_end(epoch)
                    saved = at_ckpt or stop or self.iteration == end
                    if saved:
                        self.save()
                    if stop:
                        bar.close()
                        handler.chain()
                    try:
                        call_hooks(
                            self.hooks,
                            Boundary(
                                self.iteration,
                                epoch,
                                self.iteration % self.iters_per_epoch == 0,
                                saved,
                            ),
                        )
                    except BaseException:
                        bar.close()
                        raise
                bar.close()
                del batches
        finally:
            handler.uninstall()
        return self.finish()

    def _epoch_summary(self, epoch: int) -> None:
        """Mean of the epoch's logged windows, read back from metrics.jsonl so that a resumed
        epoch summarises the same records as an uninterrupted one."""
        if not self.dist.is_main:
            return
        rows = [
            r
            for r in read_jsonl(self.metrics_path)
            if r.get("type") == "train" and r["epoch"] == epoch
        ]
        if not rows:
            return
        record = {"type": "epoch", "epoch": epoch + 1, "iteration": self.iteration}
        for key in self.term_names:
            record[key] = round(float(np.mean([r[key] for r in rows])), 6)
        append_jsonl(self.metrics_path, record)

    def finish(self) -> dict:
        wall = self.elapsed + (time.time() - self.t_start)
        done = {}
        if self.dist.is_main:
            teacher_bb = (self.teacher or self.student).backbone
            atomic_torch_save(teacher_bb.state_dict(), self.run_dir / "backbone.pt")
            # the released form: timm loads it with safetensors.torch.load_file
            atomic_save_safetensors(
                teacher_bb.state_dict(),
                self.run_dir / "backbone.safetensors",
                exported_metadata(self.cfg),
            )
            atomic_torch_save(
                self.student.backbone.state_dict(), self.run_dir / "student_backbone.pt"
            )
            train = [r for r in read_jsonl(self.metrics_path) if r.get("type") == "train"]
            speeds = [r["images_per_s"] for r in train[1:]] or [r["images_per_s"] for r in train]
            done = {
                **provenance(),
                "world_size": self.dist.world_size,
                "wall_time_s": round(wall, 2),
                "images_per_s": round(float(np.median(speeds)), 2) if speeds else None,
                "peak_memory_mb": round(peak_memory_mb(self.device), 1),
                "skipped_images": self.skipped,
                "iterations": self.iteration,
                "epochs": self.iteration / self.iters_per_epoch,
                "final_loss": train[-1]["loss"] if train else None,
                "finished_at": now_iso(),
            }
            atomic_write_json(self.run_dir / "DONE.json", done)
        barrier()
        return done


def _check_finished(run_dir: Path) -> None:
    """A finished marker vouches for the configuration and the weights beside it."""
    done = run_dir / "DONE.json"
    for needed in (run_dir / "config.yaml", run_dir / "backbone.pt"):
        if not needed.is_file():
            raise RunDirError(
                f"{done} exists but {needed} does not: cannot tell what finished "
                f"here; delete {done} to resume the run or rerun it"
            )
    try:
        marker = json.loads(done.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{done} is not JSON ({exc}); delete it to resume the run") from None
    if not isinstance(marker, dict) or "iterations" not in marker:
        raise RunDirError(
            f"{done} lacks key 'iterations': not a finished marker; delete it to resume the run"
        )


def run_started(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that a different configuration must not continue: one
    with a checkpoint or a finished marker. A config.yaml alone is what a start that failed
    before its first checkpoint (missing test data for the k-NN monitor, a diverged first
    step) leaves; nothing was trained under it, so it binds nobody and the next start
    replaces it."""
    return (run_dir / "checkpoints" / "last.pt").is_file() or (run_dir / "DONE.json").is_file()


def pretrain(
    cfg: dict, run_dir: str | Path, hooks: Sequence[Hook] = (), monitor: Monitor | None = None
) -> dict:
    """Train ``cfg`` into ``run_dir``; resume from its checkpoint; no-op when DONE.json exists.
    ``hooks``, ``monitor``: see Pretrainer."""
    run_dir = Path(run_dir)
    if (run_dir / "config.yaml").is_file() and run_started(run_dir):
        check_same_run(load_run_config(run_dir), cfg, run_dir)
    if (run_dir / "DONE.json").is_file():
        # checked before it is trusted: DONE.json says that *some* run finished here
        _check_finished(run_dir)
        log.info("%s exists: run already finished", run_dir / "DONE.json")
        return {}
    trainer = Pretrainer(cfg, run_dir, hooks, monitor)
    trainer.setup()
    if trainer.dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    if trainer.ckpt_path.is_file():
        trainer.restore()
    elif trainer.dist.is_main and trainer.metrics_path.exists():
        trainer.metrics_path.unlink()  # records of a run that never reached a checkpoint
    return trainer.train()
