"""Refactoring guard: each script, same seed and flags, computes bitwise the run recorded in tests/recorded_runs.json.

Every episode's return, every evaluation's return and a hash of the final parameters must match the record exactly.
Float sums in another order give other bits, and CPUs differ in how their kernels add (AVX2 against AVX-512), so the
check is exact only on the kind of machine the record names; elsewhere it is skipped with both machines named.
A change that is meant to change what runs compute re-records, from a checkout whose tests pass, with

    OMP_NUM_THREADS=1 python tests/test_same_run.py

and says so in its commit message.
"""

import glob
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RECORD = Path(__file__).with_name("recorded_runs.json")
FLAGS = ["--no-cuda", "--seed", "5", "--total-timesteps", "1200", "--batch-size", "4", "--buffer-size", "30",
         "--eval-frequency", "300", "--eval-episodes", "3", "--target-network-frequency", "3", "--save-model"]  # fmt: skip
RUNS = [("iql.py", "lbf-hard"), ("iql_ps.py", "lbf-hard"), ("vdn.py", "lbf-hard"), ("vdn_ps.py", "lbf-hard"),
        ("dvdn.py", "lbf-hard"), ("dvdn_gt.py", "lbf-hard"), ("vdn.py", "marbler-pcp"), ("dvdn.py", "marbler-pcp-exact"),
        ("iql_ps.py", "mpe-spread"), ("dvdn_gt.py", "mpe-tag")]  # fmt: skip


def machine() -> str:
    return f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()} torch {torch.__version__}"


def one_run(script: str, env: str, folder: Path) -> dict:
    """The run's printed returns (training episodes and evaluations) and the sha256 of its saved parameters."""
    out = subprocess.run([sys.executable, str(ROOT / script), *FLAGS, "--env", env], cwd=folder, capture_output=True,
                         text=True, check=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    model = torch.load(glob.glob(str(folder / "runs" / "*" / script.replace(".py", ".pt")))[0])
    digest = hashlib.sha256()
    for state in model if isinstance(model, list) else [model]:
        for key, tensor in state.items():
            digest.update(key.encode() + tensor.numpy().tobytes())
    return {"returns": [line for line in out.stdout.splitlines() if "return=" in line], "params": digest.hexdigest()}


@pytest.mark.parametrize("script, env", RUNS, ids=[f"{s}-{e}" for s, e in RUNS])
def test_the_run_is_bitwise_the_recorded_one(script, env, tmp_path):
    record = json.loads(RECORD.read_text())
    if record["machine"] != machine():
        pytest.skip(f"recorded on {record['machine']}, this is {machine()}: float sums may differ in the last bits")
    expected = record["runs"][f"{script} {env}"]
    got = one_run(script, env, tmp_path)
    assert len(got["returns"]) == len(expected["returns"]) >= 5  # episodes ended and 4 evaluations ran
    assert got == expected


if __name__ == "__main__":  # re-record (see the docstring)
    import tempfile

    runs = {}
    for script, env in RUNS:
        with tempfile.TemporaryDirectory() as folder:
            runs[f"{script} {env}"] = one_run(script, env, Path(folder))
            print(script, env, len(runs[f"{script} {env}"]["returns"]), "returns", flush=True)
    RECORD.write_text(json.dumps({"machine": machine(), "flags": FLAGS, "runs": runs}, indent=1) + "\n")
