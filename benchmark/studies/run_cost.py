"""CPU time of whole training runs, this checkout against another commit (`--vs`), in one sitting: for every script and
env the two versions run the same command one after the other, --repeats times, and the tool prints the ratio of
their CPU times (the children's user + system time, start-up and imports included) and whether the two runs logged the
same episodes (a faster step must be bitwise the same run). The other commit is checked out into a temporary git
worktree; the runs write into a temporary folder. Pin it to an idle core (`taskset -c 1`) and keep the other core
from timing work: CPU time is robust to a busy neighbour, not to a shared core.

    taskset -c 1 python -m benchmark.studies.run_cost --vs 80d6a4f~1 --scripts vdn_ps.py --envs mpe-spread \
        --total-timesteps 30000
"""

import os
import re
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np
import tyro

from benchmark.checks import at_least_one

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["iql.py", "iql_ps.py", "vdn.py", "vdn_ps.py", "dvdn.py", "dvdn_gt.py"]


@dataclass
class Args:
    vs: str
    """the commit (or any git revision) to compare this checkout against"""
    scripts: List[str] = field(default_factory=lambda: ["vdn_ps.py"])
    """training scripts to run"""
    envs: List[str] = field(default_factory=lambda: ["mpe-spread"])
    """env presets"""
    total_timesteps: int = 30_000
    """env steps of each run (evaluation only at the end, one episode)"""
    repeats: int = 2
    """runs per version, the versions alternating (the median CPU time is used)"""


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(code: Path, script: str, env: str, steps: int, workdir: str):
    """One run; its CPU seconds and the returns it logged (training episodes, then the evaluation)."""
    command = [sys.executable, str(code / script), "--env", env, "--total-timesteps", str(steps), "--eval-frequency",
               str(steps), "--eval-episodes", "1", "--no-cuda"]  # fmt: skip
    start = cpu_seconds()
    out = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = cpu_seconds() - start
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: {' '.join(command[1:])} failed in {code}: {last}")
    return seconds, re.findall(r"episodic_return=(\S+)", out.stdout)


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.studies.run_cost")
    at_least_one(total_timesteps=args.total_timesteps, repeats=args.repeats)
    for script in [s for s in args.scripts if s not in SCRIPTS]:
        raise SystemExit(f"error: --scripts {script} is not a training script; choose from {', '.join(SCRIPTS)}")
    revision = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{args.vs}^{{commit}}"], cwd=ROOT,
                              capture_output=True, text=True)  # fmt: skip
    if revision.returncode != 0:
        raise SystemExit(f"error: --vs {args.vs} is not a commit of this repository")
    commit = revision.stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "worktree", "add", "--detach", str(other), commit], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            print(f"CPU seconds of whole runs, {args.total_timesteps} steps, median of {args.repeats}; "
                  f"--vs {commit[:7]} against this checkout")
            for script in args.scripts:
                for env in args.envs:
                    if not (other / script).is_file():
                        print(f"{script} {env}: not in {commit[:7]}")
                        continue
                    times, logs = {"vs": [], "here": []}, {}
                    for _ in range(args.repeats):
                        for name, code in (("vs", other), ("here", ROOT)):
                            seconds, returns = run(code, script, env, args.total_timesteps, tmp)
                            times[name].append(seconds)
                            logs.setdefault(name, returns)
                    before, after = np.median(times["vs"]), np.median(times["here"])
                    same = "the same episodes" if logs["vs"] == logs["here"] else "DIFFERENT episodes"
                    print(f"{script:11s} {env:24s} {before:8.1f} -> {after:8.1f}  ratio {before / after:5.2f}  "
                          f"({same}, {len(logs['here'])} returns compared)")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, capture_output=True)
