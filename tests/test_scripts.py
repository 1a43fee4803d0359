"""End-to-end runs of the six scripts, plus the guards of STYLE.md section 8 (shared blocks, diff budgets)."""

import difflib
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import envs  # noqa: E402
from envs import make_env  # noqa: E402

SCRIPTS = ["iql.py", "iql_ps.py", "vdn.py", "vdn_ps.py", "dvdn.py", "dvdn_gt.py"]
MULTIPROCESS = ["dvdn_multiprocess.py", "dvdn_gt_multiprocess.py"]  # torchrun children; tests/test_multiprocess.py runs them
# changed lines (difflib, both sides) of each child against its parent, as last reviewed; lower these as diffs shrink.
# DIFF_SLACK lets a correct fix to a line that parent and child share (a few changed lines) pass without a new review.
# The last pair is two siblings: IQL (PS) is VDN (PS) without the VDN sum, so the two read side by side.
DIFF_BUDGET = {("iql.py", "iql_ps.py"): 71, ("iql.py", "vdn.py"): 31, ("vdn.py", "vdn_ps.py"): 61, ("vdn.py", "dvdn.py"): 68,
               ("dvdn.py", "dvdn_gt.py"): 62, ("vdn_ps.py", "iql_ps.py"): 11,
               ("dvdn.py", "dvdn_multiprocess.py"): 220, ("dvdn_gt.py", "dvdn_gt_multiprocess.py"): 243}  # fmt: skip
DIFF_SLACK = 6
LBF = ["lbf-easy", "lbf-medium", "lbf-hard"]
MARBLER = ["marbler-arctic", "marbler-material", "marbler-pcp", "marbler-warehouse"]
MPE = ["mpe-spread", "mpe-tag", "mpe-adversary"]
TINY = ["--no-cuda", "--total-timesteps", "300", "--batch-size", "2", "--buffer-size", "10", "--eval-frequency", "150",
        "--eval-episodes", "2", "--target-network-frequency", "2"]  # fmt: skip


def run(script, *extra, cwd, check=True, env=None):
    return subprocess.run([sys.executable, str(ROOT / script), *TINY, *extra], cwd=cwd, check=check, capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip


def episode_lines(stdout):
    return [line for line in stdout.splitlines() if "episodic_return" in line]


@pytest.mark.parametrize("env", LBF + MARBLER + ["marbler-pcp-exact"] + MPE)
@pytest.mark.parametrize("script", SCRIPTS)
def test_end_to_end(script, env, tmp_path):
    if env.removesuffix("-exact") in MARBLER:
        pytest.importorskip("envs.marbler")
    if env in MPE:
        pytest.importorskip("mpe2")
    out = run(script, "--env", env, cwd=tmp_path).stdout
    assert episode_lines(out), out
    assert "eval_episodic_return" in out
    events = list((tmp_path / "runs").glob("*/events.out.tfevents.*"))
    assert len(events) == 1


def test_progress_line_every_10k_steps_and_every_30_seconds(monkeypatch, capsys):
    """A run resumed at step 30k of 100k, on a fake clock: lines at 40k and 50k, then one whenever more than 30 s passed
    without a 10k step; SPS and ETA count from the resume; TensorBoard gets SPS at the 10k steps only."""
    clock, scalars = [1000.0], []

    class Writer:
        def add_scalar(self, *args):
            scalars.append(args)

    monkeypatch.setattr(envs.time, "time", lambda: clock[0])
    progress = envs.Progress(30_000, 100_000, Writer())
    for step in range(30_001, 55_001):
        clock[0] += 1 / 512 if step <= 50_000 else 1 / 32  # 512 SPS up to 50k, then 32 (binary fractions: exact sums)
        progress.update(step)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["global_step=40000/100000, SPS=512, ETA=1m57s", "global_step=50000/100000, SPS=512, ETA=1m37s"]
    # then once each time more than 30 s passed: 961 steps of 1/32 s; SPS = 20961 steps / (39.0625 s + 30.03125 s)
    assert lines[2] == "global_step=50961/100000, SPS=303, ETA=2m41s", lines[2]
    assert [line.split(",")[0] for line in lines[2:]] == [f"global_step={50_000 + 961 * k}/100000" for k in range(1, 6)]
    assert scalars == [("charts/SPS", 512, 40_000), ("charts/SPS", 512, 50_000)]


@pytest.mark.parametrize("script", SCRIPTS)
def test_same_seed_same_output(script, tmp_path):
    first = run(script, "--seed", "3", "--env", "lbf-hard", cwd=tmp_path).stdout
    second = run(script, "--seed", "3", "--env", "lbf-hard", cwd=tmp_path).stdout
    assert episode_lines(first) == episode_lines(second)
    other = run(script, "--seed", "4", "--env", "lbf-hard", cwd=tmp_path).stdout
    assert episode_lines(first) != episode_lines(other)


def test_save_model(tmp_path):
    run("dvdn_gt.py", "--save-model", cwd=tmp_path)
    (model,) = (tmp_path / "runs").glob("*/dvdn_gt.pt")
    state_dicts = torch.load(model)
    assert len(state_dicts) == 3 and "rnn.weight_hh_l0" in state_dicts[0]


def test_track_offline(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    run("vdn_ps.py", "--track", "--capture-video", cwd=tmp_path, env=env)
    (offline_run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert len(list(offline_run.glob("files/media/videos/eval/*.gif"))) == 2  # one per evaluation, sent to wandb


@pytest.mark.parametrize("script, env", [("iql_ps.py", "lbf-hard"), ("dvdn.py", "marbler-pcp")])
def test_capture_video_films_evaluations_and_changes_nothing(script, env, tmp_path):
    """--capture-video films the first episode of each evaluation, frame by frame, headless; the run's numbers are the
    same as without it."""
    from PIL import Image

    if env in MARBLER:
        pytest.importorskip("envs.marbler")
    (tmp_path / "plain").mkdir(), (tmp_path / "filmed").mkdir()
    flags = ["--env", env, "--eval-episodes", "1", "--save-model"]
    plain = run(script, *flags, cwd=tmp_path / "plain").stdout
    filmed = run(script, *flags, "--capture-video", cwd=tmp_path / "filmed").stdout
    assert [line for line in plain.splitlines() if "return" in line] == [
        line for line in filmed.splitlines() if "return" in line]  # fmt: skip
    (plain_model,), (filmed_model,) = [list((tmp_path / run).glob("runs/*/*.pt")) for run in ["plain", "filmed"]]
    plain_states, filmed_states = torch.load(plain_model), torch.load(filmed_model)  # a list, or a shared network's dict
    for plain_state, filmed_state in zip(*[[s] if isinstance(s, dict) else s for s in [plain_states, filmed_states]]):
        for key in plain_state:  # the same training, step for step
            torch.testing.assert_close(plain_state[key], filmed_state[key], rtol=0, atol=0)
    assert not list((tmp_path / "plain").glob("runs/*/videos"))
    videos = sorted((tmp_path / "filmed").glob("runs/*/videos/*.gif"))
    assert [v.name for v in videos] == ["eval_150.gif", "eval_300.gif"]
    for video in videos:
        with Image.open(video) as gif:
            frames = [np.asarray(gif.seek(i) or gif.convert("RGB")) for i in range(gif.n_frames)]
        assert 2 <= len(frames) <= make_env(env, 0).episode_limit + 1  # the reset and every step of one episode
        assert any((a != b).any() for a, b in zip(frames, frames[1:]))  # the team moves


@pytest.mark.parametrize(
    "script, flags, message",
    [
        ("iql.py", ["--env", "lbf-impossible"], "lbf-easy, lbf-medium, lbf-hard"),
        ("vdn.py", ["--env", "mpe-push"], "mpe-spread, mpe-tag, mpe-adversary, an LBF preset with the suffix -2.0"),
        ("vdn.py", ["--env", "Foraging-10x10-0p-3f-v3"], "unknown lbforaging id"),
        ("vdn_ps.py", ["--total-timesteps", "0"], "--total-timesteps must be positive"),
        ("iql.py", ["--batch-size", "-1"], "--batch-size must be positive"),
        ("vdn.py", ["--batch-size", "20", "--buffer-size", "10"], "cannot exceed --buffer-size"),
        ("dvdn.py", ["--link-prob", "0"], "--link-prob 0.0 connects 3 agents in under 1 of 1000 draws"),
        ("dvdn_gt.py", ["--link-prob", "0.01"], "--link-prob 0.01 connects 3 agents in under 1 of 1000 draws"),
        ("iql.py", ["--seed", "-1"], "--seed must lie in [0, 4294867295]"),
        ("iql_ps.py", ["--seed", str(2**32)], "--seed must lie in [0, 4294867295]"),
        ("vdn.py", ["--learning-rate", "-1"], "--learning-rate must be positive"),
        ("vdn_ps.py", ["--learning-rate", "0"], "--learning-rate must be positive"),
        ("dvdn.py", ["--gamma", "1.5"], "--gamma must lie in [0, 1]"),
        ("iql.py", ["--end-e", "2"], "--end-e must lie in [0, 1]"),
        ("vdn.py", ["--start-e", "0.01", "--end-e", "0.05"], "--end-e (0.05) cannot exceed --start-e (0.01)"),
        ("vdn_ps.py", ["--eval-epsilon", "-0.1"], "--eval-epsilon must lie in [0, 1]"),
        ("iql_ps.py", ["--tau", "0"], "--tau must be positive"),
        ("dvdn.py", ["--tau", "1.5"], "--tau must lie in [0, 1]"),
        ("dvdn_gt.py", ["--beta2", "1"], "--beta2 must lie in [0, 1), got 1.0"),
        ("dvdn_gt.py", ["--beta1", "-0.1"], "--beta1 must lie in [0, 1), got -0.1"),
        ("dvdn_gt.py", ["--consensus-rounds", "-1"], "--consensus-rounds must be 0 or more"),
        ("dvdn.py", ["--link-prob", "1.5"], "--link-prob must lie in [0, 1]"),
        ("vdn.py", ["--checkpoint-frequency", "100", "--checkpoint-dir", "/proc/version/x"], "/proc/version/x is not"),
        # a budget in which fewer than --batch-size episodes end trains nothing: not a run to keep
        ("iql.py", ["--env", "lbf-hard", "--total-timesteps", "100", "--batch-size", "10", "--save-model"],
         "no gradient step"),
    ],
)
def test_bad_input_gives_one_line(script, flags, message, tmp_path):
    result = run(script, *flags, cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert message in result.stderr
    if "no gradient step" not in message:  # stopped before the run folder (and a wandb run) is made
        assert not (tmp_path / "runs").exists()
    assert not list(tmp_path.rglob("*.pt"))  # and no untrained network is saved


# NaN and inf: every comparison with NaN is False, so each check must be written to fail on it
NON_FINITE = [("iql.py", "--learning-rate", "inf", "--learning-rate must be positive and finite, got inf"),
              ("dvdn_gt.py", "--learning-rate", "nan", "--learning-rate must be positive and finite, got nan"),
              ("dvdn_gt.py", "--adam-eps", "nan", "--adam-eps must be positive and finite, got nan"),
              ("vdn.py", "--max-grad-norm", "nan", "--max-grad-norm must be positive and finite, got nan"),
              ("iql_ps.py", "--tau", "nan", "--tau must be positive and finite, got nan"),
              ("vdn_ps.py", "--gamma", "nan", "--gamma must lie in [0, 1], got nan"),
              ("dvdn.py", "--link-prob", "nan", "--link-prob must lie in [0, 1], got nan"),
              ("dvdn_gt.py", "--beta1", "nan", "--beta1 must lie in [0, 1), got nan"),
              ("iql.py", "--eval-epsilon", "nan", "--eval-epsilon must lie in [0, 1], got nan")]  # fmt: skip


@pytest.mark.parametrize("script, flag, value, message", NON_FINITE, ids=[f"{s}{f}={v}" for s, f, v, _ in NON_FINITE])
def test_nan_and_inf_flags_stop_in_one_line(script, flag, value, message, tmp_path):
    result = run(script, flag, value, cwd=tmp_path, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {message}" and not (tmp_path / "runs").exists(), result.stderr


def test_bad_choice_is_rejected_by_the_cli(tmp_path):
    result = run("dvdn.py", "--topology", "ring", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "switching" in result.stderr  # tyro names the valid choices


def blocks(path, marker="# TRY NOT TO MODIFY"):
    """Every block that starts with `marker`, up to the next blank line or marker line."""
    found, current = [], None
    for line in (ROOT / path).read_text().splitlines():
        stripped = line.strip()
        if current is not None and (not stripped or stripped.startswith(("# TRY NOT TO MODIFY", "# ALGO LOGIC"))):
            found.append("\n".join(current))
            current = None
        if stripped.startswith(marker):
            current = [line]
        elif current is not None:
            current.append(line)
    if current is not None:
        found.append("\n".join(current))
    return found


def test_try_not_to_modify_blocks_are_identical():
    reference = blocks(SCRIPTS[0])
    assert len(reference) >= 6
    for script in SCRIPTS[1:]:
        assert blocks(script) == reference, script
    without_checkpoints = [block for block in reference if "import checkpoints" not in block]  # they keep none
    assert len(without_checkpoints) == len(reference) - 1
    for script in MULTIPROCESS:
        assert blocks(script) == without_checkpoints, script


def test_markers_are_spelled_one_way():
    for script in SCRIPTS + MULTIPROCESS:
        text = (ROOT / script).read_text()
        assert not re.search(r"#\s*(algo logic|Algo Logic|ALGO Logic|try not to modify|Try Not)", text), script


@pytest.mark.parametrize("parent, child", list(DIFF_BUDGET))
def test_diff_against_parent_stays_small(parent, child):
    lines = (ROOT / parent).read_text().splitlines(), (ROOT / child).read_text().splitlines()
    changed = sum(1 for d in difflib.ndiff(*lines) if d[:2] in ("- ", "+ "))
    assert changed <= DIFF_BUDGET[parent, child] + DIFF_SLACK, f"{parent} -> {child}: {changed} changed lines"


def line_kinds(lines):
    """The kind of each line of a script: header (line 1), flags (Args' fields and help), flag checks (Args.__post_init__),
    checkpoint keys (the learner tuple saved and restored), and algorithm (everything else: networks, training, logging)."""
    kinds, where = [], "algorithm"
    for n, line in enumerate(lines):
        if line.startswith("class Args"):
            where = "flags"
        elif line.strip().startswith("def __post_init__"):
            where = "flag checks"
        elif line[:1].strip():  # the next top-level statement ends Args
            where = "algorithm"
        kind = "checkpoint keys" if 'checkpoint["learner"]' in line or "learner=(" in line else where
        kinds.append("header" if n == 0 else kind)
    return kinds


def diff_kinds(parent, child):
    """Changed lines (both sides, as the budget counts them) of child against parent, counted by kind."""
    (a, b), counts, i, j = [(ROOT / f).read_text().splitlines() for f in (parent, child)], Counter(), 0, 0
    kinds_a, kinds_b = line_kinds(a), line_kinds(b)
    for d in difflib.ndiff(a, b):
        if d[:2] in ("  ", "- "):
            counts[kinds_a[i]] += d[:2] == "- "
            i += 1
        if d[:2] in ("  ", "+ "):
            counts[kinds_b[j]] += d[:2] == "+ "
            j += 1
    return counts


KINDS = ["algorithm", "flags", "flag checks", "checkpoint keys", "header"]


def test_diffs_are_mostly_algorithm_and_the_docs_table_says_so():
    """At least 80% of each parent-to-child diff is the child's algorithm (its code and the flags it adds); the rest is the
    header line, the checks of its added flags and its learner tuple. docs/contributing.md shows these counts."""
    rows = ["| parent -> child | changed lines | " + " | ".join(KINDS) + " | algorithm share |", "|---" * 8 + "|"]
    for parent, child in DIFF_BUDGET:
        counts = diff_kinds(parent, child)
        total = sum(counts.values())
        share = (counts["algorithm"] + counts["flags"]) / total
        assert share >= 0.8, (parent, child, counts)
        cells = " | ".join(str(counts[kind]) for kind in KINDS)
        rows.append(f"| `{parent}` -> `{child}` | {total} | {cells} | {share:.0%} |")
    table = "\n".join(rows)
    assert table in (ROOT / "docs" / "contributing.md").read_text(), "docs/contributing.md's table should read:\n" + table


def test_a_script_copied_with_envs_alone_trains(tmp_path):
    """checkpoints.py is imported only under --checkpoint-frequency or --resume: a script and envs/ are enough to train."""
    shutil.copy(ROOT / "dvdn_gt.py", tmp_path)
    shutil.copytree(ROOT / "envs", tmp_path / "envs", ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "dvdn_gt.py", *TINY, "--env", "lbf-hard"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0 and "eval_episodic_return" in out.stdout, out.stderr


def test_importing_a_script_runs_nothing(tmp_path):
    code = "import sys; sys.path.insert(0, %r); import dvdn_gt, iql, iql_ps, vdn, vdn_ps, dvdn, dvdn_multiprocess" % str(ROOT)
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=120)
    assert not (tmp_path / "runs").exists()
