"""Result records: one small JSON file per finished run under results/, the evidence that outlives machines and checkouts.

    python -m benchmark.records --runs sweeps/lbf-easy    # write a record for every run folder found (--commit to name it)

A record holds the run's evaluation curve (env step, evaluation return), its script, env, seed, every flag value, the
git commits (at the run's end, and at its start and each resume when benchmark/sweep.py ran it) and a fingerprint of the
settings that change results: every flag except the seed and those that only change where or how a run is logged, plus
the env preset's version (`envs.PRESET_VERSIONS`) and RESULTS_VERSION.
Records with one fingerprint are seeds of one experiment; `benchmark/report.py` never averages across fingerprints.
The file name is `{env}__{exp_name}__{seed}__{fingerprint}.json`, so the same run made twice (on CPU: bitwise the same)
is one file, and runs from other machines are added by copying their files in.
"""

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

from envs import PRESET_VERSIONS

RESULTS_VERSION = 1
"""bump it in the commit that changes what the scripts compute (not how they log), so older runs get set apart"""
OUTSIDE_FINGERPRINT = {"seed", "track", "wandb_project_name", "wandb_entity", "save_model", "capture_video",
                       "checkpoint_frequency", "checkpoint_dir", "resume", "cuda", "torch_deterministic"}  # fmt: skip
TAG = "eval/episodic_return"
ENV_PACKAGES = ("lbforaging", "gymnasium", "mpe2", "pettingzoo", "cvxopt", "daqp", "tyro")  # what the envs and flags run on
RUN_FOLDER = re.compile(r"(.+?)__(.+?)__(-?\d+)__(\d+)")  # the scripts' run_name: {env}__{exp_name}__{seed}__{time}


@dataclass
class Args:
    runs: tuple[str, ...] = ("sweeps",)
    """folders searched recursively for run folders ({env}__{exp_name}__{seed}__{unix_time}) with event files"""
    results: str = "results"
    """folder of the records"""
    commit: Optional[str] = None
    """git commit of the code that made the runs; default: this checkout's HEAD"""


@functools.lru_cache(maxsize=None)
def load_script(path: str):
    """A training script as a module, loaded once per path (importing a script runs nothing)."""
    name = f"{Path(path).stem}_{hashlib.sha256(path.encode()).hexdigest()[:8]}"  # two scripts with one stem stay apart
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # tyro reads its classes' docstrings, for --help and its errors, through sys.modules
    spec.loader.exec_module(module)
    return module


def fingerprint(flags: dict) -> str:
    """12 hex digits that change exactly when a setting that changes results changes."""
    settings = {key: str(value) for key, value in flags.items() if key not in OUTSIDE_FINGERPRINT}
    settings["env_version"] = PRESET_VERSIONS.get(str(flags["env"]), 1)
    settings["results_version"] = RESULTS_VERSION
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def record_path(results, flags: dict) -> Path:
    return Path(results) / f"{flags['env']}__{flags['exp_name']}__{flags['seed']}__{fingerprint(flags)}.json"


def git_commit(folder) -> str:
    """HEAD of the checkout that holds `folder`, with '-dirty' when its tracked files have changes; 'unknown' outside git."""
    def git(*cmd):
        return subprocess.run(["git", "-C", str(folder), *cmd], capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "HEAD")
    return (head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")) if head else "unknown"


def machine() -> dict:
    """What a run's numbers depend on besides its code and flags: the CPU, the instruction set torch picked, the
    package versions (the same seed and code give other floats on another CPU capability or torch build)."""
    import numpy
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    field = {key: re.search(rf"^{key}\s*:\s*(.+)$", info, flags=re.M) for key in ("model name", "cpu family", "model")}
    cpu = " ".join(m.group(1) for m in field.values() if m) or platform.processor()  # e.g. 'Intel(R) Xeon(R) Processor 6 167'
    return {"host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "numpy": numpy.__version__, "python": platform.python_version(), "os": platform.platform(),
            "packages": {name: package_version(name) for name in ENV_PACKAGES}}  # fmt: skip


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machines(sweep_run_dir) -> list:
    """The machine each start and resume of a sweep's run ran on, in order, as benchmark/sweep.py logs them."""
    log = Path(sweep_run_dir) / "log.txt"
    return [json.loads(m) for m in re.findall(r"^# machine (\{.*\})$", log.read_text(), flags=re.M)] if log.exists() else []


def started_by(sweep_run_dir) -> list:
    """The commits that each start and resume of a sweep's run began from, in order, as benchmark/sweep.py logs them in
    `<out>/<env>__<exp_name>__<seed>/log.txt`; empty for a folder without that log."""
    log = Path(sweep_run_dir) / "log.txt"
    return re.findall(r"^# commit (\S+)$", log.read_text(), flags=re.M) if log.exists() else []


def read_events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0}).Reload()


def read_curve(run_dir) -> list:
    """The evaluation curve [[step, return], ...] as TensorBoard shows it ([] if the run logged none)."""
    events = read_events(run_dir)
    return [[e.step, e.value] for e in events.Scalars(TAG)] if TAG in events.Tags()["scalars"] else []


def read_run(run_dir):
    """(flags, evaluation curve) of one run folder: the flags from the hyperparameter table the script logs (the newest,
    which a resumed run rewrites), the curve as TensorBoard shows it (steps a stopped run logged past its checkpoint
    are purged)."""
    events = read_events(run_dir)
    if TAG not in events.Tags()["scalars"] or "hyperparameters/text_summary" not in events.Tags()["tensors"]:
        return None
    table = events.Tensors("hyperparameters/text_summary")[-1].tensor_proto.string_val[0].decode()
    flags = dict(re.findall(r"^\|([a-z_0-9]+)\|(.*)\|$", table, flags=re.M)[1:])  # [0] is the header, |param|value|
    return flags, [[e.step, e.value] for e in events.Scalars(TAG)]


def train_time(run_dir):
    """(seconds, starts): the wall-clock time the run's processes spent, summed over its event files (every start and
    every resume writes its own; each counts from its first event to its last), and how many files there are. A resumed
    run also counts the steps its stopped process made past the last checkpoint: computed once, then made again."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    spans = []
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        times = [event.wall_time for event in EventFileLoader(str(path)).Load()]
        spans.append(max(times) - min(times) if times else 0.0)
    return sum(spans), len(spans)


def make_record(run_dir, commit: str, started_by=(), machines=()):
    """The record of one run folder: `commit` is the code's commit when the run ended, `started_by` the commits its start
    and each resume began from, `machines` the machine of each (benchmark/sweep.py logs both; empty when unknown)."""
    run = read_run(run_dir)
    if run is None:
        return None
    flags, curve = run
    seconds, starts = train_time(run_dir)
    return {"env": flags["env"], "exp_name": flags["exp_name"], "seed": int(flags["seed"]), "fingerprint": fingerprint(flags),
            "script": f"{flags['exp_name']}.py", "commit": commit, "started_by": list(started_by),
            "machines": list(machines),
            "env_version": PRESET_VERSIONS.get(flags["env"], 1),
            "results_version": RESULTS_VERSION, "run_name": Path(run_dir).name, "written": time.strftime("%Y-%m-%d %H:%M"),
            "train_seconds": round(seconds), "starts": starts, "flags": flags, "eval": curve}  # fmt: skip


def write_record(record, results) -> Path:
    path = record_path(results, record["flags"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def read_records(results):
    """Every record under `results`, as dicts; a folder that is not there, or a file that is not a record, stops in one
    line that names it (a typo must not blank a table)."""
    if not Path(results).is_dir():
        raise SystemExit(f"error: no folder of records at {results}")
    records = []
    for path in sorted(Path(results).rglob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SystemExit(f"error: {path} is not a result record ({e})")
    return records


def run_dirs(folders):
    """Every run folder ({env}__{exp_name}__{seed}__{unix_time}) under `folders`."""
    return [path for folder in folders for path in sorted({p.parent for p in Path(folder).rglob("events.out.tfevents.*")})
            if RUN_FOLDER.fullmatch(path.name)]  # fmt: skip


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.records")
    commit = args.commit or git_commit(Path(__file__).parent)
    for folder in args.runs:
        if not Path(folder).is_dir():
            raise SystemExit(f"error: --runs {folder} is not a folder")
    found = run_dirs(args.runs)
    if not found:
        raise SystemExit(f"error: no run folders ({{env}}__{{exp_name}}__{{seed}}__{{unix_time}}) under {' '.join(args.runs)}")
    for run_dir in found:
        sweep_dir = run_dir.resolve().parents[1]  # a sweep's <run dir>/runs/<run folder>
        record = make_record(run_dir, commit, started_by(sweep_dir), machines(sweep_dir))
        print(f"{run_dir}: " + (f"wrote {write_record(record, args.results)}" if record else f"no {TAG}, skipped"))
