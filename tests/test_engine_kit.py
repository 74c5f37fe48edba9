"""The training kit every loop uses: state files and their one mismatch policy, hooks,
device and precision, per-sample seeds."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

LOG = logging.getLogger("test.engine.kit")


def state_file(path, fingerprint, disposable):
    from folk.engine.checkpoint import StateFile

    return StateFile(
        path,
        identity={"format": 1, "fingerprint": fingerprint},
        disposable=disposable,
        remedy="delete it",
        other="another setting",
        log=LOG,
        required=("step",),
    )


@pytest.mark.parametrize(
    "fingerprint", ["abc", torch.tensor([1, 2], dtype=torch.uint8), {"lrs": (0.1, 0.2), "seed": 0}]
)
def test_a_state_of_the_same_identity_is_resumed(tmp_path, fingerprint):
    state_file(tmp_path / "s.pt", fingerprint, False).save({"step": 3})
    state = state_file(tmp_path / "s.pt", fingerprint, False).load()
    assert state["step"] == 3 and state["format"] == 1


def test_no_file_is_nothing_to_resume(tmp_path):
    assert state_file(tmp_path / "s.pt", "abc", False).load() is None


def test_a_product_of_another_identity_is_refused(tmp_path):
    from folk.errors import RunDirError

    state_file(tmp_path / "s.pt", "abc", False).save({"step": 3})
    with pytest.raises(RunDirError, match=r"s\.pt was written by another setting; delete it"):
        state_file(tmp_path / "s.pt", "xyz", False).load()


def test_a_cache_of_another_identity_is_discarded_with_a_warning(tmp_path, caplog):
    state_file(tmp_path / "s.pt", "abc", True).save({"step": 3})
    with caplog.at_level(logging.WARNING):
        assert state_file(tmp_path / "s.pt", "xyz", True).load() is None
    assert str(tmp_path / "s.pt") in caplog.text and "starting afresh" in caplog.text


def test_a_damaged_product_is_refused_and_a_damaged_cache_discarded(tmp_path, caplog):
    from folk.errors import DamagedFileError

    path = tmp_path / "s.pt"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DamagedFileError, match="delete it"):
        state_file(path, "abc", False).load()
    with caplog.at_level(logging.WARNING):
        assert state_file(path, "abc", True).load() is None
    assert str(path) in caplog.text and "starting afresh" in caplog.text


def test_stop_after_counts_the_steps_of_its_call():
    from folk.engine.hooks import Boundary, StopRequested, stop_after

    hook = stop_after(2)
    hook(Boundary(7, 0, False, False))  # a resumed run: its own count, not the step's
    with pytest.raises(StopRequested) as stop:
        hook(Boundary(8, 0, False, True))
    assert stop.value.signum == 0


def test_at_epoch_end_sees_epoch_ends_only():
    from folk.engine.hooks import Boundary, at_epoch_end, call_hooks

    seen = []
    for step, end in ((1, False), (2, True), (3, False), (4, True)):
        call_hooks([at_epoch_end(seen.append)], Boundary(step, (step - 1) // 2, end, end))
    assert seen == [0, 1]


def test_autocast_dtype_of_each_setting():
    from folk.engine.device import autocast_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("auto", cuda) == torch.bfloat16
    assert autocast_dtype("fp32", cuda) is None and autocast_dtype("fp16", cuda) == torch.float16
    assert autocast_dtype("bf16", cpu) == torch.bfloat16


def test_key_seed_is_numpys_seed_sequence_of_the_key():
    from folk.utils.seeding import key_seed

    assert key_seed(3, 1, 7) == int(np.random.SeedSequence([3, 1, 7]).generate_state(1)[0])
    assert key_seed(3, 1, 7) != key_seed(3, 1, 8)
