"""Faults seen from the command line: one writer per directory, a damaged finished-marker,
paths that must not lead out, system errors, the modes and durability of written files,
rule logs across reruns, and the exit statuses of docs/api.md, "Exit codes".

Each test reproduces a defect of the code before these fixes. Subprocesses run with one
torch thread: the tests share two cores.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import FASHION_SOURCE, REPO, tiny_overrides

DEFAULTS = REPO / "folk" / "config" / "defaults.yaml"
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _default_sigint() -> None:
    # a shell's background job (`cmd &`, as CI runners often start the suite) inherits SIGINT
    # ignored, and an ignored signal stays ignored across exec: give the child the default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def folk(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "folk.cli", *map(str, args)],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
        **kw,
    )


def pretrain_argv(run_dir: Path, root: Path, *extra: str) -> list[str]:
    argv = ["pretrain", "--out", str(run_dir), "--config", str(DEFAULTS)]
    for item in tiny_overrides(root) + list(extra):
        argv += ["--set", item]
    return argv


def wait_for(predicate, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} first: {proc.communicate()}")
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def last_line(text: str) -> str:
    """The last line of ``text`` without progress bars (tqdm draws them on stderr without
    a newline, and redraws them at exit)."""
    text = re.sub(r"[^\r\n]*\| *\d+/\d+ \[[^\]\r\n]*\]", "", text)
    lines = [l for l in re.split(r"[\r\n]", text) if l.strip()]
    return lines[-1].strip() if lines else ""


def temp_files(directory: Path) -> list[str]:
    from folk.utils.io import TEMP_PATTERN

    return sorted(str(p) for p in directory.rglob("*") if TEMP_PATTERN.match(p.name))


def lock_pid(directory: Path) -> int | None:
    try:
        return json.loads((directory / "folk.lock").read_text()).get("pid")
    except (OSError, ValueError):
        return None


@pytest.fixture
def run_dir(tiny_cfg, tmp_path) -> Path:
    """A run directory with the tiny configuration and a random backbone: enough for an
    evaluation, no training."""
    from folk.models import build_backbone

    cfg = tiny_cfg()
    path = tmp_path / "run"
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    torch.manual_seed(0)
    torch.save(build_backbone(cfg).state_dict(), path / "backbone.pt")
    return path


@pytest.fixture
def checkpointed(tiny_cfg, tmp_path, one_thread) -> Path:
    """A run stopped after its checkpoint at iteration 2 (of 8)."""
    from folk.engine.hooks import stop_after
    from folk.engine.pretrain import StopRequested, pretrain

    path = tmp_path / "ckrun"
    with pytest.raises(StopRequested):
        pretrain(tiny_cfg(), path, hooks=[stop_after(2)])
    return path


# ---------------------------------------------------------------- 4: one writer per directory


def test_one_writer_per_run_directory(fashion_root, tmp_path):
    """A second `folk pretrain` on a busy run directory refuses (status 1) naming the
    holder; once the holder is SIGKILLed, the same command resumes (the kernel dropped the
    flock), and SIGINT then ends it with 130."""
    run = tmp_path / "run"
    argv = pretrain_argv(run, fashion_root, "pretrain.epochs=200", "pretrain.checkpoint_every=1")
    holder = folk(*argv)
    try:
        wait_for(lambda: (run / "checkpoints" / "last.pt").exists(), holder)
        rival = folk(*argv)
        try:
            _, err = rival.communicate(timeout=60)
        finally:
            rival.kill()  # unlocked code lets it train alongside
        assert rival.returncode == 1, err
        line = last_line(err)
        assert "is in use" in line and f"pid {holder.pid}" in line, err
        assert socket.gethostname() in line and str(run / "folk.lock") in line
        assert holder.poll() is None  # the holder goes on undisturbed
    finally:
        holder.kill()
        holder.wait()
    mtime = (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    resumed = folk(*argv)
    try:
        wait_for(lambda: lock_pid(run) == resumed.pid, resumed)
        wait_for(
            lambda: (run / "checkpoints" / "last.pt").stat().st_mtime_ns != mtime, resumed
        )  # training again, past the resume
        resumed.send_signal(signal.SIGINT)
        _, err = resumed.communicate(timeout=120)
    finally:
        resumed.kill()
    assert "resumed from" in err
    assert resumed.returncode == 130, err
    assert "Traceback" not in err and "stopped by SIGINT" in last_line(err), err


def test_second_evaluation_of_the_same_directory_is_refused(run_dir, capsys):
    import fcntl

    from folk.cli import main

    out_dir = run_dir / "eval" / "knn"
    out_dir.mkdir(parents=True)
    with open(out_dir / "folk.lock", "w") as holder:  # another writer, just started
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert main(["eval", "knn", "--run", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "is in use" in err and str(out_dir / "folk.lock") in err
    assert not (out_dir / "metrics.json").exists()


# ---------------------------------------------------------------- 6: the finished-marker


def test_damaged_eval_marker_makes_the_task_run_again(run_dir, capsys, one_thread):
    from folk.cli import main

    argv = ["eval", "knn", "--run", str(run_dir)]
    marker = run_dir / "eval" / "knn" / "metrics.json"
    assert main(argv) == 0
    good = json.loads(marker.read_text())
    assert main(argv) == 0 and "nothing to do" in capsys.readouterr().err  # valid: kept
    damages = {
        "torn": marker.read_text()[: len(marker.read_text()) // 2],
        "other task": json.dumps({**good, "task": "linear"}),
        "no primary": json.dumps({**good, "metrics": {}}),
        "nan": json.dumps({**good, "metrics": {k: float("nan") for k in good["metrics"]}}),
    }
    for kind, text in damages.items():
        marker.write_text(text)
        assert main(argv) == 0, kind
        out = capsys.readouterr()
        assert "nothing to do" not in out.err, kind
        assert "damaged" in out.err and str(marker) in out.err, kind
        again = json.loads(marker.read_text())
        assert again["metrics"] == good["metrics"] and again["task"] == "knn", kind


# ---------------------------------------------------------------- 8: paths


@pytest.mark.parametrize("variant", ["../x", "/tmp/folk-abs", "a/b", "..", "a/../../../x"])
def test_variant_is_a_name_not_a_path(run_dir, tmp_path, capsys, variant):
    from folk.cli import main

    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "knn", "--run", str(run_dir), "--variant", variant])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--variant" in err and repr(variant) in err and "plain name" in err
    assert sorted(tmp_path.rglob("*")) == before  # no work, nothing written
    assert not Path("/tmp/folk-abs").exists()


def test_data_root_through_a_symlink_is_checked_resolved(tmp_path, monkeypatch, capsys):
    from folk.cli import main
    from folk.data.prepare import checked_root

    project, outside = tmp_path / "project", tmp_path / "outside"
    (project / "real").mkdir(parents=True)
    outside.mkdir()
    (project / "data").symlink_to(outside, target_is_directory=True)
    (project / "inner").symlink_to(project / "real", target_is_directory=True)
    params = project / "p.yaml"
    params.write_text(
        f"data:\n  dataset: fashion_mnist\n  root: data/fm\n  source: {FASHION_SOURCE}\n"
    )
    monkeypatch.chdir(project)
    assert main(["prepare", "fashion_mnist", "--config", str(params)]) == 2
    err = capsys.readouterr().err
    assert "data.root" in err and "through a symlink" in err and str(outside / "fm") in err
    assert list(outside.iterdir()) == []
    assert checked_root("inner/fm", "data.root") == Path("inner/fm")  # a link inside: fine
    assert checked_root(str(outside / "fm"), "data.root") == outside / "fm"  # said plainly


# ---------------------------------------------------------------- 9: system errors


def _fail_checkpoint_writes(monkeypatch, code: int) -> None:
    """Make every write of checkpoints/last.pt fail as the system would with ``code``."""
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, **kw):
        fd, tmp = real(*args, **kw)
        if not Path(tmp).name.startswith(".last.pt."):
            return fd, tmp
        if code == errno.ENOSPC:  # the kernel's own ENOSPC, through torch's writer
            os.close(fd)
            return os.open("/dev/full", os.O_WRONLY), tmp
        if code == errno.EACCES:  # as creating the file in a read-only directory
            os.close(fd)
            os.unlink(tmp)
            raise PermissionError(code, os.strerror(code), tmp)
        return fd, tmp

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    if code == errno.ENODEV:  # the device went away under the writer

        def gone(obj, f, *a, **k):
            f.write(b"partial")
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(torch, "save", gone)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.ENODEV])
def test_system_error_is_one_line_and_keeps_the_checkpoint(
    checkpointed, fashion_root, monkeypatch, capsys, code
):
    from folk.cli import main

    if code == errno.ENOSPC and not Path("/dev/full").exists():
        pytest.skip("no /dev/full to give a real ENOSPC")
    ckpt = checkpointed / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    _fail_checkpoint_writes(monkeypatch, code)
    assert main(pretrain_argv(checkpointed, fashion_root)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert last_line(err) == (
        f"folk pretrain: error: '{ckpt}': {os.strerror(code)} ({errno.errorcode[code]})"
    )
    assert ckpt.read_bytes() == before
    assert torch.load(ckpt, weights_only=True)["iteration"] == 2
    assert temp_files(checkpointed) == []


def test_next_start_removes_stale_temporary_files(checkpointed, fashion_root, capsys):
    from folk.cli import main

    stale = [
        checkpointed / "checkpoints" / ".last.pt.k3j_x9q2.tmp",
        checkpointed / ".metrics.jsonl.a1b2c3d4.tmp",
    ]
    for path in stale:
        path.write_bytes(b"left by a killed writer")
    kept = checkpointed / "notes.tmp"  # not of the atomic writers' naming: not ours
    kept.write_text("mine")
    assert main(pretrain_argv(checkpointed, fashion_root)) == 0
    assert (checkpointed / "DONE.json").is_file()
    assert not any(p.exists() for p in stale) and kept.exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_on_a_real_tmpfs(small_tmpfs, tiny_cfg, fashion_root, capsys, one_thread):
    from folk.cli import main
    from folk.engine.hooks import stop_after
    from folk.engine.pretrain import StopRequested, pretrain

    run = small_tmpfs / "run"
    with pytest.raises(StopRequested):
        pretrain(tiny_cfg(), run, hooks=[stop_after(2)])
    ckpt = run / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    with open(small_tmpfs / "filler", "wb") as f:  # take every block left
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    assert main(pretrain_argv(run, fashion_root)) == 1
    line = last_line(capsys.readouterr().err)
    assert line.startswith(f"folk pretrain: error: '{run}") and "No space left on device" in line
    assert ckpt.read_bytes() == before and temp_files(run) == []
    (small_tmpfs / "filler").unlink()
    assert main(pretrain_argv(run, fashion_root)) == 0  # room again: it resumes and ends
    assert (run / "DONE.json").is_file()


# ---------------------------------------------------------------- 10: cluster hygiene


@pytest.mark.parametrize("mask", [0o002, 0o022, 0o077])
def test_written_files_honour_the_umask(tmp_path, mask):
    from folk.utils.io import atomic_torch_save, atomic_write_json

    old = os.umask(mask)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        atomic_torch_save({"x": torch.zeros(2)}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    for name in ("a.json", "b.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


def test_directory_is_synced_after_the_rename(tmp_path, monkeypatch):
    from folk.utils.io import atomic_torch_save

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync-dir" if stat.S_ISDIR(st.st_mode) else "fsync-file", st.st_ino))
        real_fsync(fd)

    def replace(src, dst):
        real_replace(src, dst)
        events.append(("replace", None))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    (tmp_path / "checkpoints").mkdir()
    atomic_torch_save({"x": torch.zeros(2)}, tmp_path / "checkpoints" / "last.pt")
    kinds = [k for k, _ in events]
    assert kinds.index("fsync-file") < kinds.index("replace") < kinds.index("fsync-dir")
    assert ("fsync-dir", (tmp_path / "checkpoints").stat().st_ino) in events


def test_rule_logs_are_appended_across_reruns(tmp_path):
    """Every rule's shell line, taken from a dry run, run twice the way Snakemake runs a
    job: it deletes the job's log: files first (Job.remove_existing_output), then runs the
    line under `set -euo pipefail`. The first attempt fails, the second succeeds; the log
    must hold both."""
    from test_workflow import copy_workflow, dry_run_jobs, snakemake

    wf = copy_workflow(tmp_path / "wf")
    res = snakemake(wf, "-n", "-p", "--configfile", "params/demo.yaml")
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = {j["rule"]: j for j in dry_run_jobs(res.stdout) if j["shell"] not in ("", "None")}
    assert {"prepare_data", "pretrain", "evaluate", "report"} <= set(jobs)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "folk").write_text(
        '#!/bin/sh\necho "attempt $ATTEMPT: folk $1"\n'
        'echo "attempt $ATTEMPT on stderr" >&2\nexit "$STATUS"\n'
    )
    (fake / "folk").chmod(0o755)
    for rule, job in jobs.items():
        log = wf / re.search(r'ln -sfn "\$\(basename (\S+)\)\.all"', job["shell"]).group(1)
        for attempt, status in ((1, 3), (2, 0)):
            log.parent.mkdir(parents=True, exist_ok=True)
            if log.is_symlink() or log.exists():
                log.unlink()  # what Snakemake does before every job
            env = dict(
                os.environ,
                PATH=f"{fake}{os.pathsep}{os.environ['PATH']}",
                ATTEMPT=str(attempt),
                STATUS=str(status),
            )
            done = subprocess.run(
                ["bash", "-c", "set -euo pipefail; " + job["shell"]],
                cwd=wf,
                env=env,
                capture_output=True,
                text=True,
            )
            assert done.returncode == status, (rule, done.stderr)
            # everything goes to the log (Snakemake shows it: show-failed-logs)
            assert done.stdout == done.stderr == "", rule
        text = log.read_text()
        assert "attempt 1: folk" in text and "attempt 2: folk" in text, (rule, text)
        assert text.index("attempt 1 on stderr") < text.index("attempt 2 on stderr")


# ---------------------------------------------------------------- 11: exit statuses


def test_exit_status_of_usage_and_config_errors_is_2(tmp_path):
    bad_key = folk(
        "pretrain", "--config", DEFAULTS, "--set", "pretrain.epochs=-1", "--out", tmp_path / "run"
    )
    usage = folk("eval", "knn", "--run", tmp_path, "--variant", "../x")
    for proc, words in ((bad_key, "pretrain.epochs"), (usage, "--variant")):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert words in last_line(err) and "Traceback" not in err


def test_exit_status_of_a_system_error_is_1_with_one_line(fashion_root):
    proc = folk(*pretrain_argv(Path("/dev/full/run"), fashion_root))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert last_line(err) == "folk pretrain: error: '/dev/full/run': Not a directory (ENOTDIR)"


def test_exit_status_of_data_and_numeric_failures_is_1(
    tiny_cfg, fashion_root, tmp_path, monkeypatch, capsys, one_thread
):
    """In-process main(): the status comes from the same code as in a subprocess, and
    the NaN has to be injected into the step."""
    from folk.cli import main
    from folk.engine import step

    missing = tmp_path / "no-data"
    assert main(pretrain_argv(tmp_path / "r1", missing)) == 1
    assert str(missing) in capsys.readouterr().err

    original = step.FolkObjective.forward

    def poisoned(self, views, teacher_temp, generator):
        loss, terms = original(self, views, teacher_temp, generator)
        return loss * float("nan"), terms

    monkeypatch.setattr(step.FolkObjective, "forward", poisoned)
    assert main(pretrain_argv(tmp_path / "r2", fashion_root)) == 1
    assert "nan" in capsys.readouterr().err


def test_sigterm_during_an_evaluation_exits_143(run_dir):
    out_dir = run_dir / "eval" / "linear"
    proc = folk("eval", "linear", "--run", run_dir, "--set", "eval.linear.epochs=100000")
    try:
        wait_for(lambda: (out_dir / "log.txt").exists(), proc)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and last_line(err) == "folk eval: error: stopped by SIGTERM"
    assert temp_files(run_dir) == [] and not (out_dir / "metrics.json").exists()


def test_the_same_snakemake_command_resumes_after_an_interrupt(tmp_path):
    """The repository's default workflow profile (./profiles -> workflow/profiles/default)
    is what a plain `snakemake` from the repository root reads: after a Ctrl-C (SIGINT to
    the terminal's process group) or a SIGTERM in the middle of a job, running the same
    command again redoes the job instead of stopping at the incomplete output. Without the
    profile the rerun refuses (the check has teeth)."""
    snakemake = Path(sys.executable).parent / "snakemake"
    assert (REPO / "profiles").resolve() == (REPO / "workflow" / "profiles").resolve()
    for with_profile, sig in (
        (True, signal.SIGINT),
        (True, signal.SIGTERM),
        (False, signal.SIGINT),
    ):
        wf = tmp_path / f"{'with' if with_profile else 'without'}-{sig.name}"
        wf.mkdir()
        (wf / "Snakefile").write_text(
            'rule slow:\n    output: "out.txt"\n'
            '    shell: "echo start > {output}; sleep 30; echo done >> {output}"\n'
        )
        if with_profile:
            (wf / "profiles").mkdir()
            (wf / "profiles" / "default").symlink_to(REPO / "workflow" / "profiles" / "default")
        cmd = [str(snakemake), "--cores", "1", "--quiet"]
        proc = subprocess.Popen(
            cmd,
            cwd=wf,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
        deadline = time.time() + 60
        while not (wf / "out.txt").exists() and time.time() < deadline:
            time.sleep(0.2)
        os.killpg(proc.pid, sig)
        proc.communicate(timeout=60)
        out = wf / "out.txt"  # interrupted mid-job (SIGTERM: Snakemake removes the output)
        assert not out.exists() or out.read_text() == "start\n"
        (wf / "Snakefile").write_text(
            'rule slow:\n    output: "out.txt"\n    shell: "echo done > {output}"\n'
        )
        again = subprocess.run(cmd, cwd=wf, capture_output=True, text=True, timeout=120)
        if with_profile:
            assert again.returncode == 0, again.stdout + again.stderr
            assert (wf / "out.txt").read_text() == "done\n"
        else:
            assert again.returncode != 0 and "ncomplete" in again.stdout + again.stderr


def test_a_signal_swallowed_by_the_code_it_interrupted_still_exits_with_its_status(
    monkeypatch, capsys
):
    """SIGTERM can land inside code that catches everything (a module being imported) and
    then fails some other way; the command still reports the signal and exits 143."""
    import os
    import types

    from folk import cli

    def run(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises here
        except BaseException:
            pass
        raise AttributeError("module 'numpy' has no attribute 'multiply'")

    module = types.ModuleType("folk_fake_command")
    module.add_arguments, module.run = (lambda parser: None), run
    monkeypatch.setitem(sys.modules, "folk_fake_command", module)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("folk_fake_command", "a stand-in"))
    # main() turns only a signal at its default action into an exception, and the shell
    # that started the suite may have left SIGTERM otherwise
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert cli.main(["fake"]) == 128 + signal.SIGTERM
        assert capsys.readouterr().err.strip().endswith("folk fake: error: stopped by SIGTERM")
        # the next call starts with no signal: the same failure without one is a plain error
        module.run = lambda args: (_ for _ in ()).throw(AttributeError("no signal this time"))
        with pytest.raises(AttributeError, match="no signal this time"):
            cli.main(["fake"])
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_signal_during_an_import_is_raised_after_the_import(tmp_path, monkeypatch, capsys):
    """An exception from the handler inside an import can cross C++ frames that abort
    the process (CI saw SIGABRT while torch was being imported); the signal is delivered
    again after the import, and the command still stops with its status."""
    from folk import cli

    (tmp_path / "folk_slow_import.py").write_text(
        "import os, signal, time\n"
        "STAGES = ['import started']\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(0.5)  # the handler runs here, inside the import\n"
        "STAGES.append('import finished')\n"
        "def add_arguments(parser):\n"
        "    pass\n"
        "def run(args):\n"
        "    STAGES.append('run started')\n"
        "    time.sleep(5)\n"
        "    STAGES.append('run finished')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "folk_slow_import", raising=False)
    monkeypatch.setitem(cli.COMMANDS, "slow", ("folk_slow_import", "a stand-in"))
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert cli.main(["slow"]) == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sys.modules["folk_slow_import"].STAGES == [
        "import started",
        "import finished",
        "run started",
    ]
    assert capsys.readouterr().err.strip().endswith("folk slow: error: stopped by SIGTERM")
