"""Run a grid of scripts x env presets x seeds as local processes; resumable; or write Slurm / wandb sweep files.

    python -m benchmark.sweep --scripts iql.py dvdn_gt.py vdn_ps.py --envs lbf-easy --seeds 1 2 3 -- --total-timesteps 2000000

Run it from the repository root: `python -m` finds the package there, and the paths in `--scripts` are read from there.

Each run gets its own working dir `<out>/<env>__<exp_name>__<seed>__<fingerprint>/` (the script writes its `runs/`
there; the fingerprint is the record's, benchmark/records.py: other flags that change results, another dir), with
stdout+stderr in `log.txt` and an empty `done` file written only when the script exits with code 0. Rerunning the same
command skips dirs that have `done`, resumes the runs that left a checkpoint (`-- --checkpoint-frequency N`; the
checkpoint stays in the run's dir, so put `--out` outside the checkout for long sweeps), and restarts the others.
Several sweeps may share one `--out` (one per core, say): a run holds the lock file `<out>/<run dir>.lock` while it
trains, and a sweep that finds a run locked, or finished meanwhile, skips it.
Everything after `--` is passed unchanged to every script.
"""

import ctypes
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

from benchmark.records import RUN_FOLDER, fingerprint, git_commit, load_script, machine, machines, make_record, read_curve
from benchmark.records import record_path, started_by, write_record
from envs import env_family


@dataclass
class Args:
    scripts: tuple[str, ...] = ("iql.py", "iql_ps.py", "vdn.py", "vdn_ps.py", "dvdn.py", "dvdn_gt.py")
    """training scripts to run (any path; exp_name is the file stem)"""
    envs: tuple[str, ...] = ("lbf-easy",)
    """env presets passed as --env"""
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
    """seeds passed as --seed (the paper uses ten)"""
    out: str = "sweeps"
    """folder that holds one working dir per run"""
    workers: int = os.cpu_count() or 1
    """number of runs in parallel (one process each; each child gets OMP_NUM_THREADS=1)"""
    task_id: Optional[int] = None
    """run only the grid entry with this index (0-based; used by the Slurm job array)"""
    slurm: Optional[str] = None
    """write a Slurm job-array script for this grid to this file instead of running"""
    wandb_sweep: Optional[str] = None
    """write a wandb sweep configuration (YAML) for this grid to this file instead of running"""
    dry_run: bool = False
    """print the runs that would start, then exit"""
    results: Optional[str] = "results"
    """folder of the result records (benchmark/records.py): a finished run writes one, a run that has one is skipped"""
    seed_first: bool = False
    """if True, run seed by seed (every cell gets its first seed before any gets its second): a sweep cut short leaves
    balanced cells"""


def make_grid(scripts, envs, seeds, seed_first=False):
    """All (script, env, seed) triples in a fixed order, so a Slurm array index always means the same run."""
    if seed_first:
        return [(script, env, seed) for seed in seeds for env in envs for script in scripts]
    return [(script, env, seed) for script in scripts for env in envs for seed in seeds]


def planned_flags(script, env, seed, extra):
    """Every flag value the run will use, as the script's own parser resolves them (imports the script: runs nothing)."""
    argv = ["--env", env, "--seed", str(seed), *extra]
    module = load_script(str(Path(script).resolve()))
    if not hasattr(module, "Args"):
        raise SystemExit(f"error: {script} defines no Args dataclass, so the sweep cannot tell its flags")
    flags, unknown = tyro.cli(module.Args, args=argv, return_unknown_args=True)
    if unknown:
        raise SystemExit(f"error: {script} takes no {' '.join(unknown)} (see python {script} --help)")
    return vars(flags)


def run_dir(out, script, env, seed, extra):
    """The run's working dir, named by the settings that change its results: a sweep with other flags (another
    learning rate, another budget) gets other dirs, so it neither skips nor resumes a run that is not its own."""
    return Path(out) / f"{env}__{Path(script).stem}__{seed}__{fingerprint(planned_flags(script, env, seed, extra))}"


def check_grid(scripts, envs):
    """Stop in one line, before any run starts, on an env that no script can make, or on a script that is not here
    (`scripts=()` skips that check: a Slurm job or a wandb sweep may run where this machine's files are not)."""
    for env in envs:
        try:
            env_family(env)
        except ValueError as e:
            raise SystemExit(f"error: {e}")
    for script in scripts:
        if not Path(script).is_file():
            raise SystemExit(f"error: no script {script} (from {Path.cwd()})")


def is_done(script, env, seed, out, extra, results):
    if (run_dir(out, script, env, seed, extra) / "done").exists():
        return True
    return bool(results) and record_path(results, planned_flags(script, env, seed, extra)).exists()


def newest_checkpoint(path):
    checkpoints = sorted(Path(path).glob("runs/*/checkpoint.pt"), key=lambda p: p.stat().st_mtime)
    return checkpoints[-1] if checkpoints else None


def intact(checkpoint) -> bool:
    """Whether a checkpoint file is whole: torch.save writes a zip archive, whose CRCs a truncated or damaged file fails."""
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False


def die_with_parent():
    """Run in the child before it starts (Linux): the kernel sends it SIGTERM when the sweep dies, even by SIGKILL, so a
    stopped sweep leaves no trainer behind that a later sweep would double (the run's lock dies with the sweep)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def progress(path):
    """How far a stopped run got, from its log: the last progress line and the last evaluation ('' if it logged none)."""
    log = (Path(path) / "log.txt").read_text() if (Path(path) / "log.txt").exists() else ""
    steps = re.findall(r"^global_step=(\d+)/(\d+), SPS=(\d+)", log, flags=re.M)
    evals = re.findall(r"^global_step=(\d+), eval_episodic_return=(\S+)", log, flags=re.M)
    text = f"logged up to step {int(steps[-1][0]):,} of {int(steps[-1][1]):,} at {steps[-1][2]} SPS" if steps else ""
    return text + (f", last evaluation {float(evals[-1][1]):.3f} at step {int(evals[-1][0]):,}" if evals else "")


def claim(path):
    """The run's lock, held until the returned file is closed, or None if another process holds it. The lock file lies
    beside the run dir, so wiping the dir keeps it; the system drops the lock when its holder dies, even by SIGKILL."""
    lock = open(path.with_name(path.name + ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def run_one(script, env, seed, out, extra, results):
    """Run one script in its own dir and write its result record; return its exit code (0 when it skips the run)."""
    path = run_dir(out, script, env, seed, extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = claim(path)
    if lock is None:
        print(f"skipped: {path} is running in another sweep", flush=True)
        return 0
    with lock:
        if is_done(script, env, seed, out, extra, results):  # another sweep may have finished it since this one began
            print(f"skipped: {path} was finished by another sweep", flush=True)
            return 0
        return train(path, script, env, seed, extra, results)


def is_running(path):
    """Whether another process holds the run's lock, for --dry-run (which creates no files)."""
    if not path.with_name(path.name + ".lock").exists():
        return False
    lock = claim(path)
    if lock is None:
        return True
    lock.close()
    return False


def trained_to_the_end(path, total_timesteps):
    """The run folder whose evaluation curve reaches `total_timesteps` (its last checkpoint may lie at the end, where
    no resume is possible: the run is finished and only its record and `done` are missing), else None."""
    checkpoint = newest_checkpoint(path)
    curve = read_curve(checkpoint.parent) if checkpoint and RUN_FOLDER.fullmatch(checkpoint.parent.name) else []
    return checkpoint.parent if curve and curve[-1][0] >= total_timesteps else None


def train(path, script, env, seed, extra, results):
    """Run the script in `path`, from its newest checkpoint if it left one; write the record if it ends well."""
    cmd = [sys.executable, str(Path(script).resolve()), "--env", env, "--seed", str(seed), *extra]
    checkpoint = newest_checkpoint(path)
    finished = trained_to_the_end(path, planned_flags(script, env, seed, extra)["total_timesteps"])
    damaged = checkpoint and not finished and not intact(checkpoint)
    if checkpoint and not damaged:  # a stopped run goes on from its newest checkpoint, bitwise as if never stopped
        cmd += ["--resume", str(checkpoint.resolve())]
    else:  # an unfinished run without a (readable) checkpoint restarts from scratch
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    if damaged:
        print(f"restarted: {path} from step 0, its checkpoint {checkpoint.name} was damaged", flush=True)
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one core per run
    start = time.time()
    with open(path / "log.txt", "a") as log:
        log.write(f"# restarted from step 0: the checkpoint {checkpoint} was damaged\n" if damaged else "")
        if finished:  # stopped after its last step: nothing to train, the record and `done` are still to write
            log.write(f"# {finished.name} trained to the end; not resumed\n")
            rc = 0
        else:
            commit = git_commit(Path(script).resolve().parent)
            log.write(f"# commit {commit}\n# machine {json.dumps(machine())}\n{shlex.join(cmd)}\n")
            log.flush()
            rc = subprocess.run(cmd, cwd=path, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=die_with_parent if sys.platform == "linux" else None).returncode
    if rc == 0:
        if results:  # the record before `done`: a sweep killed in between still counts the run as done, by its record
            newest = max(path.glob("runs/*"), key=lambda p: p.stat().st_mtime)
            record = make_record(newest, git_commit(Path(script).resolve().parent), started_by(path), machines(path))
            print(f"record: {write_record(record, results)}" if record else f"no record: {newest} logged no evaluation")
        (path / "done").touch()
    print(f"{'done' if rc == 0 else f'FAILED (exit {rc})'}: {path} in {time.time() - start:.0f}s", flush=True)
    return rc


def slurm_script(args, grid, extra):
    """A job array with one grid entry per task; each task runs this module with --task-id."""
    cmd = ["python", "-m", "benchmark.sweep", "--scripts", *args.scripts, "--envs", *args.envs,
           "--seeds", *map(str, args.seeds), "--out", args.out, "--results", str(args.results),
           *(["--seed-first"] if args.seed_first else []), "--task-id"]  # fmt: skip
    tail = shlex.join(["--", *extra]) if extra else ""
    return f"""#!/bin/bash
#SBATCH --job-name=ma-q-sweep
#SBATCH --array=0-{len(grid) - 1}
#SBATCH --cpus-per-task=1
#SBATCH --output={args.out}/slurm-%A_%a.out
# add --time/--partition/--mem for your cluster; submit from the repository root: sbatch {args.slurm}
{shlex.join(cmd)} "$SLURM_ARRAY_TASK_ID" {tail}
"""


def wandb_sweep_config(args, extra):
    """One grid sweep over script/env/seed; each wandb run calls this module on a 1x1x1 grid with --track (the agent
    starts it from the repository root, as `python -m benchmark.sweep`; `program` only names the sweep's file)."""
    return {
        "name": "ma-q-sweep",
        "project": "ma-q-learning",  # the scripts' default --wandb-project-name
        "program": "benchmark/sweep.py",
        "method": "grid",
        "metric": {"name": "eval/episodic_return", "goal": "maximize"},
        "parameters": {
            "scripts": {"values": list(args.scripts)},
            "envs": {"values": list(args.envs)},
            "seeds": {"values": list(args.seeds)},
        },
        # ${args_no_equals} expands to "--scripts vdn.py --envs lbf-easy --seeds 3"
        "command": ["${env}", "${interpreter}", "-m", "benchmark.sweep", "${args_no_equals}", "--out", args.out,
                    "--workers", "1", "--", "--track", *extra],  # fmt: skip
    }


if __name__ == "__main__":
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = tyro.cli(Args, prog="python -m benchmark.sweep", args=argv[:split]), argv[split + 1 :]
    grid = make_grid(args.scripts, args.envs, args.seeds, args.seed_first)
    if args.workers < 1:
        raise SystemExit(f"error: --workers must be at least 1, got {args.workers}")
    if args.task_id is not None and not 0 <= args.task_id < len(grid):
        raise SystemExit(f"error: --task-id must lie in [0, {len(grid) - 1}] for this grid, got {args.task_id}")
    check_grid(() if args.slurm or args.wandb_sweep else args.scripts, args.envs)

    if args.slurm or args.wandb_sweep:
        if args.slurm:
            Path(args.out).mkdir(parents=True, exist_ok=True)  # Slurm opens --output before the job starts
            Path(args.slurm).write_text(slurm_script(args, grid, extra))
            print(f"wrote {args.slurm} ({len(grid)} array tasks); submit with: sbatch {args.slurm}")
        if args.wandb_sweep:
            import yaml  # installed with wandb

            Path(args.wandb_sweep).write_text(yaml.safe_dump(wandb_sweep_config(args, extra), sort_keys=False))
            print(f"wrote {args.wandb_sweep} ({len(grid)} runs); start with: wandb sweep {args.wandb_sweep}")
        sys.exit(0)

    if args.task_id is not None:
        grid = [grid[args.task_id]]
    todo = [run for run in grid if not is_done(*run, args.out, extra, args.results)]
    print(f"{len(grid)} runs in the grid, {len(grid) - len(todo)} already done, {len(todo)} to run", flush=True)
    if args.dry_run:  # each run that would start, and whether it resumes (how far it got) or starts afresh
        for script, env, seed in todo:
            path = run_dir(args.out, script, env, seed, extra)
            checkpoint = newest_checkpoint(path)
            state = f"resumes from {checkpoint}; {progress(path)}" if checkpoint else "starts from step 0"
            state = f"running in another sweep; {progress(path)}" if is_running(path) else state
            print(f"{script} --env {env} --seed {seed}: {state}")
        sys.exit(0)
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        codes = list(pool.map(lambda run: run_one(*run, args.out, extra, args.results), todo))
    failed = [run for run, rc in zip(todo, codes) if rc != 0]
    for script, env, seed in failed:
        print(f"failed: {script} --env {env} --seed {seed}; see {run_dir(args.out, script, env, seed, extra) / 'log.txt'}")
    sys.exit(1 if failed else 0)
