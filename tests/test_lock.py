"""One run per output directory: a second concurrent run refuses in one line; a dead run's lock never blocks."""

import errno
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from util import tiny_model_and_archive, tiny_run_flags

import script
from assertdistill.core import schema
from assertdistill.distill.checkpoint import checkpoints_in
from assertdistill.distill.run import prepare_output_dir
from assertdistill.runtime import locking
from assertdistill.runtime.locking import OutputDirBusyError, OutputDirLock, output_dir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
# Takes the lock of the directory in argv[1], says so, then waits to be killed (a run that dies with it).
HOLDER = """
import sys, time
sys.path[:0] = [{root!r}]
from assertdistill.runtime.locking import OutputDirLock
OutputDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""
# Imports script.py, says so, waits for the go file, then runs: two of these reach the lock within milliseconds.
RACER = """
import os, sys, time
sys.path[:0] = [{root!r}]
import script
import assertdistill.distill.run
print("ready", flush=True)
while not os.path.exists({go!r}):
    time.sleep(0.005)
sys.exit(script.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_model_and_archive(tmp_path_factory.mktemp("lock"), num_train=8, num_val=2)


def argv_for(tmp_path, setup, **overrides):
    model_dir, flags = setup
    return tiny_run_flags(tmp_path, model_dir, flags, **{"--num_beams": 1, **overrides})


@pytest.fixture
def holder(tmp_path):
    """Start a process holding the lock of a directory; yields (start(directory) -> process)."""
    processes = []

    def start(directory):
        process = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=ROOT), str(directory)], env=ENV,
                                   stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_second_run_into_a_held_dir_refuses_in_one_line(tmp_path, setup, capsys, holder):
    out = tmp_path / "out"
    process = holder(out)
    code = script.main(argv_for(tmp_path, setup))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip() == (f"error: {out} is in use by another run (pid {process.pid} on {os.uname().nodename} "
                           f"since {(out / schema.LOCK_FILENAME).read_text().split(' since ')[1].strip()}); "
                           f"wait for it to end or choose another --output_dir")
    assert sorted(path.name for path in out.iterdir()) == [schema.LOCK_FILENAME]  # nothing written, nothing removed


def test_two_concurrent_runs_exactly_one_proceeds(tmp_path, setup):
    go = str(tmp_path / "go")
    argv = argv_for(tmp_path, setup)
    racers = [subprocess.Popen([sys.executable, "-c", RACER.format(root=ROOT, go=go), *argv], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert [racer.stdout.readline().strip() for racer in racers] == ["ready", "ready"]  # both imported torch
    open(go, "w").close()
    results = [(racer.wait(timeout=300), *racer.communicate()) for racer in racers]
    assert sorted(code for code, _, _ in results) == [0, 2], results
    refusal = next(err for code, _, err in results if code == 2)
    assert "Traceback" not in refusal
    # the holder line is written just after the lock is taken, so a racer may refuse before it can name it
    assert re.fullmatch(rf"error: {re.escape(str(tmp_path / 'out'))} is in use by another run( \(pid \d+ .*\))?; "
                        r"wait for it to end or choose another --output_dir", refusal.strip().splitlines()[-1])
    assert json.loads((tmp_path / "out" / schema.SUMMARY_FILENAME).read_text())[schema.DATA_COUNTS]


def test_a_killed_runs_lock_never_blocks_a_resume(tmp_path, setup, holder, capsys):
    out = tmp_path / "out"
    assert script.main(argv_for(tmp_path, setup, **{"--save_steps": 1})) == 0
    capsys.readouterr()
    os.unlink(out / schema.SUMMARY_FILENAME)  # as if the run died before its end
    assert checkpoints_in(str(out))
    process = holder(out)
    process.send_signal(signal.SIGKILL)  # dies holding the lock: the OS drops it
    process.wait()
    assert f"pid {process.pid} " in (out / schema.LOCK_FILENAME).read_text()  # a stale lock file is left
    code = script.main(argv_for(tmp_path, setup, **{"--save_steps": 1, "--resume_from_checkpoint": "latest"}))
    assert code == 0, capsys.readouterr().err
    assert f"pid {os.getpid()} " in (out / schema.LOCK_FILENAME).read_text()


def test_the_lock_file_is_not_a_finished_run(tmp_path, setup):
    out = tmp_path / "out"
    out.mkdir()
    (out / schema.LOCK_FILENAME).write_text("pid 1 on elsewhere since long ago\n")  # a stale lock, nothing else
    assert script.main(argv_for(tmp_path, setup)) == 0
    prepare_output_dir(str(out), overwrite=True)  # what --overwrite_output_dir clears, after taking the lock
    assert (out / schema.LOCK_FILENAME).exists()


def test_sweep_leaves_a_busy_cell_alone_and_runs_a_stale_one(tmp_path, holder):
    stub = tmp_path / "stub.py"
    stub.write_text("import os, sys\nout = sys.argv[sys.argv.index('--output_dir') + 1]\n"
                    "open(os.path.join(out, 'distillation_summary.json'), 'w').write('{}')\n")
    results = tmp_path / "res"
    busy, stale = results / "alpha_0.1_temp_2.0_seed_42", results / "alpha_0.2_temp_2.0_seed_42"
    stale.mkdir(parents=True)
    (stale / schema.LOCK_FILENAME).write_text("pid 1 on elsewhere since long ago\n")
    holder(busy)
    env = {**ENV, "PYTHON": sys.executable, "SCRIPT_PY": str(stub)}
    proc = subprocess.run(["bash", os.path.join(ROOT, "sweep.sh"), "alpha", "--alphas", "0.1 0.2", "--seeds", "42",
                           "--results_dir", str(results)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"BUSY alpha=0.1 temp=2.0 seed=42: another run holds {busy}; left alone" in proc.stderr
    assert "1 done, 0 skipped, 1 failed of 2" in proc.stdout
    assert sorted(path.name for path in busy.iterdir()) == [schema.LOCK_FILENAME]  # no run.log, nothing moved
    assert (stale / schema.SUMMARY_FILENAME).exists()


class FakeContext:
    """A DistributedContext stand-in: this rank, and what rank 0 would have said."""

    def __init__(self, rank, rank0_message=None):
        self.rank, self.rank0_message = rank, rank0_message
        self.enabled, self.is_main = True, rank == 0

    def gather(self, value):
        return [value if self.is_main else self.rank0_message, None]


def test_every_rank_refuses_when_rank_0_cannot_lock(tmp_path, holder):
    holder(tmp_path)
    with pytest.raises(OutputDirBusyError, match="is in use by another run") as raised:
        with output_dir_lock(str(tmp_path), FakeContext(0)):
            pass
    with pytest.raises(OutputDirBusyError) as raised_on_rank_1:
        with output_dir_lock(str(tmp_path / "never_created"), FakeContext(1, str(raised.value))):
            pass
    assert str(raised_on_rank_1.value) == str(raised.value)
    assert not (tmp_path / "never_created").exists()  # only rank 0 touches the directory
    with output_dir_lock(str(tmp_path / "free"), FakeContext(1)):  # rank 0 got it: the others go on
        pass


def test_a_filesystem_without_locks_runs_unlocked_with_a_warning(tmp_path, monkeypatch):
    def no_locks(*_):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locking.fcntl, "flock", no_locks)
    with pytest.warns(RuntimeWarning, match="cannot lock files"):
        with OutputDirLock(str(tmp_path)) as lock:
            assert lock.path == str(tmp_path / schema.LOCK_FILENAME)


def test_torchrun_into_a_held_dir_ends_in_one_line_per_rank(tmp_path, setup, holder):
    out = tmp_path / "out"
    holder(out)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           os.path.join(ROOT, "script.py"), *argv_for(tmp_path, setup)], env=ENV,
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode != 0
    # the two ranks write to one stderr concurrently, so their lines may run together: count the refusals
    refusals = re.findall(r"error: \S+ is in use by another run(?: \(pid \d+ on .+? since \S+\))?; wait for it "
                          r"to end or choose another --output_dir", proc.stderr)
    assert len(refusals) == 2, proc.stderr[-3000:]
    assert sorted(path.name for path in out.iterdir()) == [schema.LOCK_FILENAME]
