"""dvdn_multiprocess.py and dvdn_gt_multiprocess.py: one process per agent over torch.distributed (gloo on the loopback
interface). The same seed gives the same run as the single-process parent; each agent sends what the formula says; a lost
agent stops the others with one line; a bad launch fails with one line."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("dvdn.py", "dvdn_multiprocess.py"), ("dvdn_gt.py", "dvdn_gt_multiprocess.py")]
ROUNDS, BATCH = 2, 2
# lbf-easy has 3 agents; 800 steps give 15 gradient steps (at least 10 are asserted), two evaluations of 2 episodes
TINY = ["--no-cuda", "--env", "lbf-easy", "--seed", "1", "--topology", "switching", "--consensus-rounds", str(ROUNDS),
        "--total-timesteps", "800", "--batch-size", str(BATCH), "--buffer-size", "10", "--eval-frequency", "400",
        "--eval-episodes", "2", "--target-network-frequency", "2", "--exploration-steps", "300"]  # fmt: skip
LONG = ["--no-cuda", "--env", "lbf-easy", "--seed", "1", "--total-timesteps", "1000000", "--batch-size", "2"]
# float32 sums in another order: the parent mixes with one matrix product, an agent adds its neighbours' messages one by
# one. Measured after 15 gradient steps: at most 4e-7 (parameters of size about 0.2); the tolerance leaves 25 times that.
ATOL = 1e-5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environ(**extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo over the loopback interface, whatever the host name resolves to
    return env


def torchrun(script, *flags, cwd, nproc=3, timeout=300, check=True):
    """The agents' shared stdout is a SOCK_SEQPACKET socket, which keeps each write apart: `writes` lists them, in order,
    and `stdout` joins them."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), str(ROOT / script), *flags]  # fmt: skip
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours:
        with theirs:
            process = subprocess.Popen(command, cwd=cwd, stdout=theirs.fileno(), stderr=subprocess.PIPE, text=True,
                                       env=environ())  # fmt: skip
        writes = []
        reader = threading.Thread(target=lambda: writes.extend(iter(lambda: ours.recv(1 << 16).decode(), "")))
        reader.start()
        try:
            stderr = process.communicate(timeout=timeout)[1]
        except subprocess.TimeoutExpired:
            process.kill()  # as subprocess.run does
            raise
        reader.join()
    result = SimpleNamespace(returncode=process.returncode, stdout="".join(writes), stderr=stderr, writes=writes)
    assert result.returncode == 0 or not check, result.stdout + result.stderr
    return result


def start_agents(script, *flags, cwd):
    """The three agents started by hand with the environment torchrun gives them, and without torchrun's own monitor, which
    would end the others itself when one dies (as a node's torchrun cannot for agents on other nodes)."""
    port, agents = free_port(), []
    for i in range(3):
        rank = {"RANK": str(i), "LOCAL_RANK": str(i), "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        out, err = open(cwd / f"out{i}.txt", "w"), open(cwd / f"err{i}.txt", "w")
        agents.append(subprocess.Popen([sys.executable, str(ROOT / script), *flags], cwd=cwd, stdout=out, stderr=err,
                                       env=environ(**rank)))  # fmt: skip
    return agents


def wait_for(predicate, seconds):
    end = time.time() + seconds
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def episode_lines(stdout):
    return [line for line in stdout.splitlines() if "episodic_return" in line]


@pytest.fixture(scope="module", params=PAIRS, ids=[child for _, child in PAIRS])
def both_runs(request, tmp_path_factory):
    parent, child = request.param
    cwd = tmp_path_factory.mktemp(child.removesuffix(".py"))
    single = subprocess.run([sys.executable, str(ROOT / parent), *TINY, "--save-model"], cwd=cwd, check=True,
                            capture_output=True, text=True, timeout=300, env=environ()).stdout  # fmt: skip
    multi = torchrun(child, *TINY, "--save-model", cwd=cwd)
    return parent, child, cwd, single, multi.stdout, multi.writes


def test_same_seed_same_run_as_one_process(both_runs):
    """Same episodes, evaluations included, and the same parameters to ATOL after at least 10 gradient steps."""
    parent, child, cwd, single, multi, _ = both_runs
    assert len(episode_lines(single)) >= 12 and episode_lines(multi) == episode_lines(single)
    steps = [int(s) for s in re.findall(r"in (\d+) gradient steps", multi)]
    assert len(steps) == 3 and min(steps) >= 10, multi
    (single_model,) = cwd.glob(f"runs/*__{parent.removesuffix('.py')}__*/{parent.removesuffix('.py')}.pt")
    state_dicts = torch.load(single_model)
    for i in range(3):
        (agent_model,) = cwd.glob(f"runs/*__{child.removesuffix('.py')}__*/agent_{i}/{child.removesuffix('.py')}.pt")
        agent_state = torch.load(agent_model)  # agent i's network only
        assert agent_state.keys() == state_dicts[i].keys()
        for key in agent_state:
            torch.testing.assert_close(agent_state[key], state_dicts[i][key], rtol=0, atol=ATOL)


def test_bytes_per_gradient_step_match_the_formula(both_runs):
    """Agent i sends 4 bytes x degree x K x batch x time (its TDs) each gradient step; DVDN (GT) adds 4 bytes x degree x
    2 x n_params (its parameters and tracker). The joint action costs 8 bytes x (N - 1) per env step, training and
    evaluation alike, counted apart."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, child, cwd, _, multi, _ = both_runs
    n_params = sum(p.numel() for p in torch.load(next(cwd.glob("runs/*/agent_0/*.pt"))).values())
    for i in range(3):
        (folder,) = cwd.glob(f"runs/*__{child.removesuffix('.py')}__*/agent_{i}")
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0}).Reload()
        sent, degree, td_values = [[e.value for e in events.Scalars(f"comms/{k}")] for k in ["learning_bytes", "degree",
                                                                                             "td_values"]]  # fmt: skip
        assert len(sent) >= 10 and all(d >= 1 for d in degree)  # a switching graph is connected: no agent alone
        assert {int(v) % BATCH for v in td_values} == {0}
        extra = 2 * n_params if "gt" in child else 0
        assert sent == [4 * d * (ROUNDS * v + extra) for d, v in zip(degree, td_values)]
        (line,) = [line for line in multi.splitlines() if line.startswith(f"agent {i} sent")]
        assert f"{int(sum(sent))} bytes of learning messages" in line
        world = int(re.search(r"(\d+) bytes of actions", line).group(1))
        assert world % (8 * 2) == 0 and 800 <= world // (8 * 2) <= 800 + 2 * 2 * 50  # training and 4 evaluation episodes


def test_each_write_to_the_shared_output_is_whole_lines(both_runs):
    """The agents share one stdout; a write that stops mid-line lets another agent's line cut into that line. torchrun
    starts python -u, whose print writes a line and its newline apart unless the script buffers whole lines."""
    *_, writes = both_runs
    assert len(writes) >= 12 and [w for w in writes if not w.endswith("\n")] == []


def test_each_agent_writes_its_own_events_and_agent_0_prints(both_runs):
    _, child, cwd, _, multi, _ = both_runs
    assert len(list(cwd.glob(f"runs/*__{child.removesuffix('.py')}__*"))) == 1  # the agents agree on one run folder
    for i in range(3):
        assert list(cwd.glob(f"runs/*__{child.removesuffix('.py')}__*/agent_{i}/events.out.tfevents.*"))
    assert multi.count("eval_episodic_return") == 2  # once per evaluation, not once per agent


@pytest.mark.parametrize("script", [child for _, child in PAIRS])
def test_start_without_torchrun_gives_one_line(script, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / script), *TINY], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=environ())  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert f"start this script with torchrun, one process per agent: torchrun --nproc-per-node 3 {script}" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--peer-timeout", "0"], "--peer-timeout must be positive and finite, got 0.0"),
        (["--checkpoint-frequency", "100"], "keeps no checkpoints: drop --resume and --checkpoint-frequency"),
        (["--resume", "runs/x"], "keeps no checkpoints"),
    ],
)
def test_bad_flag_gives_one_line(flags, message, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "dvdn_multiprocess.py"), *TINY, *flags], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=environ())  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_process_count_unlike_the_agent_count_gives_one_line(tmp_path):
    """Agent 0 says what to do in one line, and torchrun adds its own failure report below (its traceback, not ours)."""
    result = torchrun("dvdn_gt_multiprocess.py", *TINY, cwd=tmp_path, nproc=4, check=False)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if "error:" in line]
    assert ours == ["error: --env lbf-easy has 3 agents but torchrun started 4 processes; start 3 "
                                  "(--nproc-per-node 3, or nodes x processes = 3)"]  # fmt: skip
    assert "dvdn_gt_multiprocess.py\", line" not in result.stderr  # no traceback from the script
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("how", ["kill", "hang"])
def test_a_lost_agent_stops_the_others_with_one_line(how, tmp_path):
    """kill -9 agent 2 (its links close), or stop it (it hangs, and --peer-timeout runs out): agents 0 and 1 end within a
    bounded time, each with one line naming agent 2, never a hang."""
    timeout = 60 if how == "kill" else 15  # the agents must also meet within it, slowed down by a busy machine
    agents = start_agents("dvdn_multiprocess.py", *LONG, "--peer-timeout", str(timeout), cwd=tmp_path)
    try:
        assert wait_for(lambda: "episodic_return" in (tmp_path / "out0.txt").read_text(), 240), "training never started"
        time.sleep(1.0)
        os.kill(agents[2].pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        stopped = time.time()
        assert wait_for(lambda: agents[0].poll() is not None and agents[1].poll() is not None, timeout + 30)
        assert time.time() - stopped < timeout + 30
    finally:
        for agent in agents:
            agent.kill()
            agent.wait()
    for i in range(2):
        err = (tmp_path / f"err{i}.txt").read_text()
        assert agents[i].returncode != 0 and "Traceback" not in err
        assert err.strip().splitlines() == [f"error: agent {i} stops: agent 2 is lost (its link closed, or it sent nothing "
                                            "within --peer-timeout); the team cannot train without it"], err  # fmt: skip


def test_torchrun_ends_the_team_when_an_agent_dies(tmp_path):
    """Under torchrun on one machine, kill -9 of one agent ends the run within seconds, with a non-zero exit naming it."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "3", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), str(ROOT / "dvdn_multiprocess.py"), *LONG]  # fmt: skip
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        launcher = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=err, env=environ())
    try:
        assert wait_for(lambda: "episodic_return" in (tmp_path / "out.txt").read_text(), 240), "training never started"
        workers = [int(pid) for pid in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()]
        (agent_2,) = [pid for pid in workers if b"RANK=2\0" in Path(f"/proc/{pid}/environ").read_bytes()]
        os.kill(agent_2, signal.SIGKILL)
        launcher.wait(timeout=60)
    finally:
        launcher.kill()
    assert launcher.returncode != 0
    err = (tmp_path / "err.txt").read_text()
    assert "error: agent 0 stops: agent 2 is lost" in err or re.search(r"rank\s*: 2 .*\n.*exitcode\s*: -9", err), err
