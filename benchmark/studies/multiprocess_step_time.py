"""Wall-clock per env step of dvdn.py and dvdn_gt.py (one process) against their multiprocess children (one process
per agent, under torchrun), on lbf-easy (3 agents) and lbf-hard (4 agents). Each run trains `--steps` steps; the time
per step is read from its event files: the wall time between the first and the last `charts/episodic_return` event,
over the env steps between them, so start-up and the final evaluation are left out. Run it on an otherwise idle machine.

    python -m benchmark.studies.multiprocess_step_time --steps 3000
"""

import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tyro

from benchmark.checks import at_least_one

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Args:
    steps: int = 3000
    """env steps per run"""
    envs: tuple[str, ...] = ("lbf-easy", "lbf-hard")
    """env presets (the process count is each env's agent count)"""


def ms_per_step(folder: Path) -> float:
    """Milliseconds per env step between the first and the last episode end logged in `folder`'s event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0}).Reload().Scalars("charts/episodic_return")
    return (events[-1].wall_time - events[0].wall_time) / (events[-1].step - events[0].step) * 1e3


def run(script: str, env: str, n_agents: int, steps: int, cwd: Path) -> float:
    flags = ["--no-cuda", "--env", env, "--seed", "1", "--total-timesteps", str(steps), "--batch-size", "8",
             "--eval-frequency", "100000", "--eval-episodes", "1"]  # fmt: skip
    command = [sys.executable, str(ROOT / script), *flags]
    if "multiprocess" in script:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n_agents), "--master-addr",
                   "127.0.0.1", "--master-port", str(port), str(ROOT / script), *flags]  # fmt: skip
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, env=environ)
    (folder,) = cwd.glob(f"runs/*__{Path(script).stem}__*")
    return ms_per_step(folder / "agent_0" if "multiprocess" in script else folder)


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.studies.multiprocess_step_time")
    at_least_one(steps=args.steps)
    from envs import make_env

    try:
        n_agents = {env: make_env(env, 0).n_agents for env in args.envs}
    except ValueError as e:
        raise SystemExit(f"error: {e}")  # a bad name stops here, in one line
    print("| env (agents) | script | one process (parent) | one process per agent |\n|---|---|---|---|")
    for env in args.envs:
        for parent in ["dvdn.py", "dvdn_gt.py"]:
            with tempfile.TemporaryDirectory() as tmp:
                one = run(parent, env, n_agents[env], args.steps, Path(tmp))
                many = run(parent.replace(".py", "_multiprocess.py"), env, n_agents[env], args.steps, Path(tmp))
            print(f"| {env} ({n_agents[env]}) | {parent.removesuffix('.py')} | {one:.2f} ms | {many:.2f} ms |", flush=True)
