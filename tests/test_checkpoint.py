"""Checkpoint and resume: a run killed after a checkpoint and resumed is bitwise the run that was never stopped."""

import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import checkpoints  # noqa: E402
import iql  # noqa: E402
from test_scripts import SCRIPTS  # noqa: E402

SHORT = ["--no-cuda", "--batch-size", "4", "--buffer-size", "30", "--eval-frequency", "300", "--eval-episodes", "3",
         "--target-network-frequency", "3", "--save-model"]  # fmt: skip
# checkpoints every 400 steps, losses logged before the end
BUDGET = {"lbf-hard": "1200", "marbler-pcp": "2000", "mpe-tag": "1200"}


def start(script, cwd, *extra):
    cmd = [sys.executable, str(ROOT / script), *SHORT, *extra]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc):
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def final_parameters(cwd):
    (model,) = [p for p in (cwd / "runs").glob("*/*.pt") if p.name != "checkpoint.pt"]
    state = torch.load(model)
    return torch.cat([t.flatten() for sd in (state if isinstance(state, list) else [state]) for t in sd.values()])


def scalars(cwd, tag):
    """(step, value) pairs of `tag` across every event file of the one run dir, as TensorBoard shows them."""
    (run_dir,) = (cwd / "runs").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.mark.parametrize("env", ["lbf-hard", "marbler-pcp", "mpe-tag"])
@pytest.mark.parametrize("script", SCRIPTS)
def test_killed_and_resumed_run_is_bitwise_the_straight_run(script, env, tmp_path):
    if env.startswith("marbler"):
        pytest.importorskip("envs.marbler")
    if env.startswith("mpe"):
        pytest.importorskip("mpe2")
    flags = ["--env", env, "--total-timesteps", BUDGET[env]]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    straight.mkdir(), stopped.mkdir()
    proc = start(script, straight, *flags)  # never checkpoints: checkpoints must not change a run

    killed = start(script, stopped, *flags, "--checkpoint-frequency", "400", "--checkpoint-dir", str(tmp_path / "ckpt"))
    deadline = time.time() + 300
    while not list((tmp_path / "ckpt").glob("*/checkpoint.pt")) and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    (checkpoint,) = (tmp_path / "ckpt").glob("*/checkpoint.pt")
    resumed = finish(start(script, stopped, "--resume", str(checkpoint.parent)))
    assert 400 <= int(resumed.split(", resumed from")[0].split("=")[-1]) < int(BUDGET[env])  # it was stopped part-way
    finish(proc)

    assert torch.equal(final_parameters(stopped), final_parameters(straight))
    for tag in ["eval/episodic_return", "charts/episodic_return", "losses/td_loss"]:
        assert scalars(stopped, tag) == scalars(straight, tag), tag  # no step lost or logged twice
    assert "eval_episodic_return" in resumed


def test_resume_keeps_flags_that_change_the_run(tmp_path):
    finish(start("vdn.py", tmp_path, "--total-timesteps", "500", "--checkpoint-frequency", "200"))
    (checkpoint,) = (tmp_path / "runs").glob("*/checkpoint.pt")
    bad = subprocess.run([sys.executable, str(ROOT / "vdn.py"), "--resume", str(checkpoint), "--learning-rate", "0.1"],
                         cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "error: --learning-rate differs from the checkpoint's (0.0003) and would change the run"
    done = subprocess.run([sys.executable, str(ROOT / "vdn.py"), "--resume", str(checkpoint), "--total-timesteps", "400"],
                          cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert done.returncode != 0 and "--total-timesteps must exceed the checkpoint's" in done.stderr
    missing = subprocess.run([sys.executable, str(ROOT / "vdn.py"), "--resume", str(tmp_path / "nowhere")],
                             cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert missing.returncode != 0 and "no checkpoint at" in missing.stderr and "Traceback" not in missing.stderr
    longer = subprocess.run([sys.executable, str(ROOT / "vdn.py"), "--resume", str(checkpoint), "--total-timesteps", "700"],
                            cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert longer.returncode == 0, longer.stderr
    assert "global_step=700, eval_episodic_return" in longer.stdout


def test_a_checkpoint_resumes_only_in_its_own_script_and_only_when_readable(tmp_path):
    """Another script's checkpoint (which would train another algorithm under this one's name), an older checkpoint
    without a script name, a truncated file, random bytes, a --save-model file: each stops in one line before any file
    is written, for all six scripts."""
    finish(start("iql_ps.py", tmp_path, "--total-timesteps", "300", "--checkpoint-frequency", "150"))
    (checkpoint,) = (tmp_path / "runs").glob("*/checkpoint.pt")
    (model,) = (tmp_path / "runs").glob("*/iql_ps.pt")
    torch.save({"args": {}, "global_step": 150}, tmp_path / "older.pt")  # as checkpoints before 2026-12-07
    (tmp_path / "truncated.pt").write_bytes(checkpoint.read_bytes()[:1000])
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    files = sorted(str(p) for p in tmp_path.rglob("*") if p.is_file())
    cases = [(checkpoint, "was written by iql_ps.py; resume it with that script"),
             (model, "is not a training checkpoint (a --save-model file?)"),
             (tmp_path / "older.pt", "has an older checkpoint format; resume it with the code that wrote it"),
             (tmp_path / "truncated.pt", "is not a readable checkpoint"),
             (tmp_path / "noise.pt", "is not a readable checkpoint")]  # fmt: skip
    for script in SCRIPTS:
        for path, message in cases if script != "iql_ps.py" else cases[1:]:
            out = subprocess.run([sys.executable, str(ROOT / script), "--resume", str(path)], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=300)  # fmt: skip
            lines = out.stderr.strip().splitlines()
            assert out.returncode != 0 and len(lines) == 1, (script, out.stderr)
            assert lines[0].startswith(f"error: --resume: {path} {message}"), (script, out.stderr)
    assert sorted(str(p) for p in tmp_path.rglob("*") if p.is_file()) == files  # nothing written anywhere


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_loss_that_overflows_stops_the_run_before_the_update(script, tmp_path):
    """A learning rate of 1e30 passes the flag checks (finite, positive) and overflows the TD loss at the second gradient
    step: the run stops there in one line, and its last checkpoint holds finite parameters."""
    flags = ["--env", "lbf-hard", "--total-timesteps", "600", "--learning-rate", "1e30", "--checkpoint-frequency", "50"]
    out = start(script, tmp_path, *flags).communicate(timeout=600)[0]
    assert re.search(r"^error: the TD loss is (inf|nan) at step \d+; stopped before updating$", out, flags=re.M), out
    assert "Traceback" not in out
    (checkpoint,) = (tmp_path / "runs").glob("*/checkpoint.pt")
    from benchmark.evaluate import unpickle_checkpoint  # the classes were pickled as the script's, run as __main__
    from benchmark.records import load_script

    state = unpickle_checkpoint(checkpoint, load_script(str(ROOT / script)))
    assert state["learner"][-1] >= 1  # its gradient step: the overflow comes after one update and one checkpoint
    networks = state["learner"][0]  # every script's learner starts with its network or its list of networks
    learned = [p for network in (networks if isinstance(networks, list) else [networks]) for p in network.parameters()]
    learned += [t for t in state["learner"] if torch.is_tensor(t)]  # dvdn_gt.py's parameter rows w, tracker z, ...
    assert learned and all(torch.isfinite(t).all() for t in learned)


def test_a_checkpoint_write_that_fails_stops_the_run_in_one_line(tmp_path):
    """A file-size limit of 1 MB (as a full disk would) fails the first checkpoint write: one line, not a traceback."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    cmd = [sys.executable, str(ROOT / "iql.py"), *SHORT, "--env", "lbf-hard", "--total-timesteps", "600",
           "--checkpoint-frequency", "300"]  # fmt: skip
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, preexec_fn=limit)
    (lines,) = [out.stderr.strip().splitlines()]
    assert out.returncode != 0 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert re.fullmatch(r"error: writing the checkpoint \S+checkpoint.pt failed \(\w+\); the last one is kept", lines[0])


def test_a_kill_during_a_checkpoint_write_leaves_the_last_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "run" / "checkpoint.pt")
    rb = iql.ReplayBuffer(capacity=10, episode_limit=5, n_agents=2, obs_size=3)

    def save(step):
        checkpoints.save(path, "iql.py", SimpleNamespace(), "run", step, rb, loop=(), learner=())

    save(100)
    real_save = torch.save

    def killed_mid_write(obj, file, **kwargs):
        real_save(obj, file, **kwargs)
        Path(file).write_bytes(Path(file).read_bytes()[:50])  # what a SIGKILL halfway through leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save(200)
    assert Path(path + ".tmp").exists()
    assert checkpoints.load(str(tmp_path / "run"), "iql.py")["global_step"] == 100
    monkeypatch.setattr(torch, "save", real_save)
    save(300)  # the next write replaces the torn file
    assert checkpoints.load(path, "iql.py")["global_step"] == 300 and not Path(path + ".tmp").exists()


def test_buffer_is_checkpointed_by_its_filled_part_compactly_and_exactly():
    rb = iql.ReplayBuffer(capacity=1000, episode_limit=5, n_agents=2, obs_size=10)
    for value in [1.0, 2.0, 3.0]:
        for t in range(4):
            obs = [np.full(10, value + t, np.float32)] * 2
            rb.add(obs, np.array([t, t + 1]), value, obs, t == 3)
        rb.end_episode()
    state = checkpoints.compact(rb)
    assert state["obs"].dtype == np.int8 and len(state["obs"]) == len(state["mask"]) == 3  # 3 of 1000 slots
    assert len(pickle.dumps(state)) < rb.obs.nbytes / 100

    def restored(state):
        back = iql.ReplayBuffer(capacity=1000, episode_limit=5, n_agents=2, obs_size=10)
        checkpoints.expand(pickle.loads(pickle.dumps(state)), back)
        return back

    back = restored(state)
    for key in ["obs", "actions", "rewards", "terminated", "mask"]:
        assert getattr(back, key).dtype == getattr(rb, key).dtype and np.array_equal(getattr(back, key), getattr(rb, key))
    assert (back.pos, back.size, back.t, back.capacity) == (rb.pos, rb.size, rb.t, rb.capacity)
    rb.obs[0, 0, 0, 0] = 0.5  # not an integer: observations stay float32 and exact
    assert restored(checkpoints.compact(rb)).obs[0, 0, 0, 0] == 0.5
