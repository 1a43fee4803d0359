"""Size and write time of a checkpoint late in a long run: the replay buffer full (its default 5000 episodes).

    python -m benchmark.studies.checkpoint_cost --script vdn_ps.py --env lbf-hard

The buffer is filled with real random-policy episodes of the env (a few, repeated: the size does not depend on what
they are, as long as LBF's observations stay small integers), next to the script's networks and an Adam state.
"""

import importlib
import os
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

import checkpoints
from benchmark.checks import at_least_one
from envs import make_env


@dataclass
class Args:
    script: str = "vdn_ps.py"
    """training script whose buffer and networks are saved"""
    env: str = "lbf-hard"
    """env preset"""
    buffer_size: int = 5000
    """replay buffer size in episodes (the scripts' default)"""
    repeats: int = 3
    """timed writes"""


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.studies.checkpoint_cost")
    at_least_one(buffer_size=args.buffer_size, repeats=args.repeats)
    script = importlib.import_module(Path(args.script).stem)  # registered in sys.modules, so its classes pickle
    env, rng = make_env(args.env, 0), np.random.default_rng(0)
    rb = script.ReplayBuffer(args.buffer_size, env.episode_limit, env.n_agents, env.obs_size)
    for _ in range(20):
        obs, _ = env.reset()
        done = False
        while not done:
            actions = rng.integers(env.n_actions, size=env.n_agents)
            next_obs, rewards, terminated, truncated, _ = env.step(actions)
            rb.add(obs, actions, sum(rewards), next_obs, terminated)
            obs, done = next_obs, terminated or truncated
        rb.end_episode()
    for key in ["obs", "actions", "rewards", "terminated", "mask"]:  # repeat the 20 episodes into every slot
        array = getattr(rb, key)
        array[:] = array[np.arange(args.buffer_size) % 20]
    rb.size, rb.pos = args.buffer_size, 0
    n_inputs = env.obs_size + env.n_agents  # with agent ids: the larger networks
    shared = "_ps" in args.script  # one network for the team; otherwise a network and a target per agent
    networks = [script.QNetwork(n_inputs, env.n_actions, script.Args.hidden_dim)
                for _ in range(1 if shared else env.n_agents * 2)]  # fmt: skip
    optimizer = torch.optim.Adam([p for n in networks for p in n.parameters()])
    sum(n(torch.zeros(1, 1, n_inputs))[0].sum() for n in networks).backward()
    optimizer.step()
    with tempfile.TemporaryDirectory() as folder:
        path, times = os.path.join(folder, "run", "checkpoint.pt"), []
        for _ in range(args.repeats):
            start = time.perf_counter()
            checkpoints.save(path, args.script, types.SimpleNamespace(), "run", 0, rb, (env,), (networks, optimizer))
            times.append(time.perf_counter() - start)
        size = os.path.getsize(path)
        start = time.perf_counter()
        torch.load(path, weights_only=False)
        load = time.perf_counter() - start
    full = sum(getattr(rb, k).nbytes for k in ["obs", "actions", "rewards", "terminated", "mask"])
    print(f"{args.script} {args.env}: checkpoint {size / 2**20:.1f} MiB (buffer in memory {full / 2**20:.1f} MiB), "
          f"write {np.median(times):.2f} s (median of {args.repeats}), load {load:.2f} s")  # fmt: skip
