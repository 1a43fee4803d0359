"""CPU time of one MPE env step, taken directly (envs/mpe.py's `step`) and through mpe2's parallel wrapper (the way it
was taken before 2026-12-07), random actions, resets included, the scripted opponents playing.

    python -m benchmark.studies.mpe_step_cost --steps 2500 --repeats 3
"""

import time
from dataclasses import dataclass

import numpy as np
import tyro

from benchmark.checks import at_least_one
from envs import make_env
from envs.mpe import PRESETS


@dataclass
class Args:
    steps: int = 2500
    """env steps per timing"""
    repeats: int = 3
    """timings per path and task (the median is printed)"""


def cost(name: str, direct: bool, steps: int) -> float:
    """Milliseconds of CPU (this process only) per env step."""
    env, rng = make_env(name, 0).env, np.random.default_rng(0)  # the MPEEnv inside RecordEpisode
    env.reset()
    start = time.process_time()
    for _ in range(steps):
        actions = rng.integers(env.n_actions, size=env.n_agents)
        if (env.step(actions) if direct else env.step_through_wrapper(actions))[3]:
            env.reset()
    return (time.process_time() - start) / steps * 1e3


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.studies.mpe_step_cost")
    at_least_one(steps=args.steps, repeats=args.repeats)
    print("| task | through the wrapper (ms/step) | direct (ms/step) | ratio |\n|---|---|---|---|")
    for name in PRESETS:
        wrapped, direct = [np.median([cost(name, d, args.steps) for _ in range(args.repeats)]) for d in (False, True)]
        print(f"| `{name}` | {wrapped:.3f} | {direct:.3f} | {wrapped / direct:.2f} |")
