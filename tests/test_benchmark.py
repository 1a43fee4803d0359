"""Tests for the benchmark package (benchmark/sweep.py, benchmark/report.py, ...): statistics, table, and sweep + report
end to end. The package is imported as `benchmark`: `python -m pytest` from the repository root puts the root on the
path, and the tools run as `python -m benchmark.<tool>`, as the docs run them."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmark.fewseeds import VERDICTS, compare, improvement, iqm, last_tenth, permutation_test
from benchmark.mutants import MUTANTS, Mutant, survey
from benchmark.records import fingerprint, machine, make_record, read_records, started_by, write_record
from benchmark.report import PAPER, best_point, bootstrap_ci, common_steps, default_flags, format_ci, make_table
from benchmark.report import FAMILIES, load_groups, paper_lines, runs_table, score_matrix, split_by_defaults
from benchmark.report import COLUMNS, ordering_lines, verdicts
from benchmark.studies.consensus_error import consensus_error
from benchmark.studies.consensus_rounds import disagreement_left, graph_law
from envs import PRESET_VERSIONS
from test_scripts import SCRIPTS

ROOT = Path(__file__).resolve().parents[1]

# Mimics the training scripts' CLI (a tyro Args dataclass, so the sweep can plan its flags) and run-dir naming, and logs
# eval/episodic_return = seed + step / 100 at steps 0, 50, ..., total_timesteps. Uses tensorboard's own event writer
# (no torch import) to keep each run fast.
FAKE_SCRIPT = """
import time
from dataclasses import dataclass
from typing import Optional

import tyro
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter


@dataclass
class Args:
    env: str = "lbf-easy"
    seed: int = 1
    total_timesteps: int = 100
    learning_rate: float = 0.1
    resume: Optional[str] = None


if __name__ == "__main__":
    args = tyro.cli(Args)
    run_name = f"{args.env}__{__file__.split('/')[-1][:-3]}__{args.seed}__{int(time.time())}"
    writer = EventFileWriter(f"runs/{run_name}")
    for step in range(0, args.total_timesteps + 1, 50):
        value = Summary.Value(tag="eval/episodic_return", simple_value=args.seed + step / 100)
        writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=[value])))
    writer.close()
"""
# seconds: a guard against a hung subprocess, not a speed test; generous, so that a machine busy training still passes
TIMEOUT = 900


def write_checkpoint(path):
    """A stand-in checkpoint: a whole zip archive, as torch.save writes (the sweep checks that much before resuming)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("state", "the training state")


def tool(name, *args):
    """The command that runs a benchmark tool as the docs do, `python -m benchmark.<name>`."""
    return [sys.executable, "-m", f"benchmark.{name}", *args]


# `python -m` finds the package from the repository root; most tests run a tool in a scratch folder (its files, its
# relative paths), so they hand it the root on PYTHONPATH, as running it from the root would
TOOL_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run_tool(name, *args, cwd, check=False):
    return subprocess.run(tool(name, *args), cwd=cwd, env=TOOL_ENV, capture_output=True, text=True, timeout=TIMEOUT,
                          check=check)  # fmt: skip


def sweep(*args, cwd):
    return run_tool("sweep", *args, cwd=cwd)


def test_tools_run_as_modules_from_the_repository_root():
    """`python -m benchmark.sweep --help` from the root, as the docs give it (no PYTHONPATH): the root is all it needs."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    out = subprocess.run(tool("sweep", "--help"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0 and "--scripts" in out.stdout, out.stdout + out.stderr
    assert "usage: python -m benchmark.sweep " in out.stdout  # its help names the command, not the file


def test_benchmark_edits_no_import_path():
    """No file of the package touches sys.path or imports a sibling by its bare name (which only a sys.path edit would
    find, and which loads the module a second time beside benchmark.<name>)."""
    files = sorted((ROOT / "benchmark").rglob("*.py"))
    siblings = "|".join(path.stem for path in files if path.stem != "__init__")
    bare = re.compile(rf"^\s*(?:from|import) (?:{siblings})\b", re.M)
    assert len(files) > 10 and (ROOT / "benchmark" / "__init__.py").is_file()
    assert (ROOT / "benchmark" / "studies" / "__init__.py").is_file()
    assert [str(path.relative_to(ROOT)) for path in files if "sys.path" in path.read_text()] == []
    assert [str(path.relative_to(ROOT)) for path in files if bare.search(path.read_text())] == []


def test_bootstrap_equal_seeds_zero_width():
    assert bootstrap_ci([0.7] * 5) == pytest.approx((0.7, 0.7))


def test_bootstrap_two_values():
    # Resampling {0, 1} twice gives means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4. The lowest 25% of the
    # resampled means are 0 and the highest 25% are 1, so the 2.5th percentile is 0 and the 97.5th is 1.
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)


def test_bootstrap_matches_direct_computation():
    values = np.array([0.2, 0.5, 0.9, 0.4, 0.6])
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 5, size=(1000, 5))
    means = sorted(sum(values[j] for j in row) / 5 for row in idx)
    # percentile with linear interpolation between order statistics at position q * (n - 1)
    pos_lo, pos_hi = 0.025 * 999, 0.975 * 999
    lo = means[int(pos_lo)] + (pos_lo - int(pos_lo)) * (means[int(pos_lo) + 1] - means[int(pos_lo)])
    hi = means[int(pos_hi)] + (pos_hi - int(pos_hi)) * (means[int(pos_hi) + 1] - means[int(pos_hi)])
    assert bootstrap_ci(values, n_resamples=1000, seed=7) == pytest.approx((lo, hi))
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)  # seeded: the report is reproducible
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_best_point_uses_only_steps_every_seed_reached():
    curves = {
        1: ([0, 10, 20, 30], [0.0, 0.4, 0.2, 9.0]),  # step 30 is best, but seed 2 never reached it
        2: ([0, 10, 15, 20], [0.0, 0.6, 9.0, 0.4]),  # step 15 is logged by seed 2 only
    }
    steps, values = common_steps(curves)
    assert steps.tolist() == [0, 10, 20] and values.tolist() == [[0.0, 0.4, 0.2], [0.0, 0.6, 0.4]]
    best = best_point(curves)
    assert (best["step"], best["n_seeds"]) == (10, 2)
    assert best["mean"] == pytest.approx(0.5)
    assert (best["lo"], best["hi"]) == pytest.approx((0.4, 0.6))  # two seeds: CI spans the two values
    assert best_point({1: ([0, 10], [1.0, 2.0]), 2: ([5], [1.0])}) is None  # no common step


def test_format_ci_offsets():
    assert format_ci(0.87, 0.85, 0.90) == "0.87 (-0.02, 0.03)"
    assert format_ci(-43.51, -45.15, -41.86) == "-43.51 (-1.64, 1.65)"
    assert format_ci(0.5, 0.5, 0.5) == "0.50 (0.00, 0.00)"  # no "-0.00"


def test_make_table_layout():
    results = {("lbf-easy", "iql"): {"mean": 0.8, "lo": 0.78, "hi": 0.83, "n_seeds": 3}}
    table = make_table("LBF (homogeneous)", {"lbf-easy": "Easy", "lbf-hard": "Hard"}, ["iql", "dvdn_gt", "vdn"], results)
    lines = table.splitlines()
    assert lines[0] == "### LBF (homogeneous)"
    assert lines[2] == "| task | IQL | DVDN (GT) | VDN |"
    assert lines[3] == "|---|---|---|---|"
    assert lines[4] == (
        "| Easy | 0.80 (-0.02, 0.03) n=3; paper 0.81 (-0.02, 0.02) | not run; paper 0.89 (-0.02, 0.02) | not run |"
    )
    assert lines[5].startswith("| Hard | not run; paper 0.43 (-0.01, 0.02) |")
    assert len(PAPER) == 21  # 4 MARBLER tasks x 3 + 3 LBF tasks x 3
    iql_ps = make_table("LBF", {"lbf-easy": "Easy", "marbler-pcp": "PCP"}, ["iql_ps"], results).splitlines()
    assert iql_ps[4:] == ["| Easy | not run; paper's IQL 0.81 (-0.02, 0.02) |", "| PCP | not run |"]  # the paper's IQL
    marbler = make_table("MARBLER", {"marbler-pcp-exact": "PCP"}, ["vdn"], {}).splitlines()
    assert marbler[4] == "| PCP | not run; paper 125.10 (-2.57, 3.09) |"  # an -exact preset is its MARBLER task


def test_curves_mark_the_papers_level_of_each_plotted_algorithm():
    lbf = paper_lines("lbf-easy", ["dvdn_gt", "iql", "iql_ps", "vdn_ps"])
    assert [(value, exp_name) for _, value, exp_name in lbf] == [(0.89, "dvdn_gt"), (0.81, "iql"), (0.94, "vdn_ps")]
    assert lbf[1][0] == "paper's IQL: 0.81"  # once, though both readings of IQL are plotted, in IQL's colour
    assert paper_lines("lbf-easy", ["iql_ps", "iql"]) == [("paper's IQL: 0.81", 0.81, "iql")]
    assert paper_lines("lbf-hard", ["iql_ps"]) == [("paper's IQL: 0.43", 0.43, "iql_ps")]  # in IQL (PS)'s colour
    assert paper_lines("marbler-pcp-exact", ["vdn"]) == [("paper's VDN: 125.10", 125.10, "vdn")]
    assert paper_lines("mpe-tag", ["vdn_ps"]) == [] and paper_lines("marbler-pcp-exact", ["iql_ps"]) == []


def test_last_tenth_and_the_permutation_test_know_when_they_cannot_decide():
    assert last_tenth(range(40)) == pytest.approx(np.mean([36, 37, 38, 39]))  # 40 evaluations: the last 4
    assert last_tenth([1.0, 5.0]) == 5.0  # at least one evaluation
    assert improvement([3, 4], [1, 2]) == 1.0 and improvement([1, 2], [2, 1]) == 0.5  # ties count one half
    # one task: 2 seeds against 2 can reach p = 2/6 at best, 3 against 3 p = 2/20; three tasks of 3 against 3: 2/20^3
    assert permutation_test([np.array([3.0, 4.0])], [np.array([1.0, 2.0])]) == pytest.approx((1 / 3, 1 / 3))
    assert permutation_test([np.array([4.0, 5, 6])], [np.array([1.0, 2, 3])]) == pytest.approx((0.1, 0.1))
    assert permutation_test([np.array([4.0, 5, 6])] * 3, [np.array([1.0, 2, 3])] * 3) == pytest.approx((2 / 8000, 2 / 8000))
    assert permutation_test([np.array([1.0, 4, 5])], [np.array([2.0, 3, 6])])[0] == pytest.approx(1.0)  # P = 4/9: no lean


def test_verdict_rule():
    apart = np.array([[1.0, 2.0, 3.0], [1.5, 2.5, 3.5], [1.2, 2.2, 3.2]])  # (seeds, tasks)
    low = apart - 1.0
    assert compare(apart, low, reps=300)["verdict"] == "above" and compare(low, apart, reps=300)["verdict"] == "below"
    # one task of 3 seeds against 3 cannot decide, however far apart: the bootstrap interval alone would say "above"
    one = compare(apart[:, :1], low[:, :1] - 10, reps=300)
    assert (one["verdict"], one["lo"], one["hi"]) == ("too few seeds to tell", 1.0, 1.0)
    mixed = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
    assert compare(mixed, mixed + 0.5, reps=300)["verdict"] == "no difference shown"  # could decide, did not
    assert set(VERDICTS) == {"above", "below", "no difference shown", "too few seeds to tell"}


def stratified_iqm_interval(scores, reps, rng):
    """rliable's stratified percentile bootstrap of the IQM, vectorised for the simulation below."""
    from scipy.stats import trim_mean

    n, tasks = scores.shape
    idx = rng.integers(0, n, size=(reps, n, tasks))
    resampled = np.take_along_axis(np.broadcast_to(scores, (reps, n, tasks)), idx, axis=1).reshape(reps, -1)
    return np.percentile(trim_mean(resampled, 0.25, axis=1), [2.5, 97.5])


def test_interval_method_coverage_on_simulated_seeds():
    """The 95% interval of the IQM (stratified percentile bootstrap) covers the true value far less often than 95% at
    few seeds. Measured on normal scores (whose IQM is their mean) over 3000 simulated experiments per case: on one task
    49% at n=2, 74% at n=3, 93% at n=10; on a family of three tasks 77%, 86% and 93%. The test reruns 400 per case
    (binomial spread about 2 points) and asserts each lies within 7 points of those figures."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 3))
    ours, theirs = stratified_iqm_interval(scores, 20_000, rng), iqm({"a": scores}, reps=4000)["a"][1:]
    assert ours == pytest.approx(theirs, abs=0.05)  # the simulation's interval is rliable's
    state = np.random.get_state()
    assert iqm({"a": scores}, reps=500)["a"] == iqm({"a": scores}, reps=500)["a"]  # seeded: the same report every time
    assert np.array_equal(np.random.get_state()[1], state[1])  # without moving numpy's global stream
    measured = {(1, 2): 0.49, (1, 3): 0.74, (1, 10): 0.93, (3, 2): 0.77, (3, 3): 0.86, (3, 10): 0.93}
    for (tasks, n), coverage in measured.items():
        lo, hi = coverage - 0.07, min(coverage + 0.07, 0.95)
        covered = [np.prod(np.sign(stratified_iqm_interval(rng.normal(size=(n, tasks)), 1000, rng))) <= 0 for _ in range(400)]
        assert lo <= np.mean(covered) <= hi, (tasks, n, np.mean(covered))


def test_verdicts_compare_only_what_both_algorithms_ran(tmp_path):
    results = tmp_path / "results"
    for seed in [1, 2, 3]:
        for env, shift in [("lbf-easy", 0.0), ("lbf-medium", 0.1), ("lbf-hard", -0.1)]:
            write_record(fake_record("dvdn_gt", env, seed, [(50, 0.5 + shift + seed / 100)]), results)
            write_record(fake_record("iql", env, seed, [(50, 0.2 + shift + seed / 100)]), results)
    write_record(fake_record("vdn_ps", "lbf-easy", 1, [(50, 0.9)]), results)
    runs = split_by_defaults(load_groups(results, [])[0])[0]
    assert score_matrix(runs, ["lbf-hard"], "iql")[0] == pytest.approx(np.array([[(0.11 - 0.116) / (0.56 - 0.116)],
                                                                                 [(0.12 - 0.116) / 0.444], [0.014 / 0.444]]))
    rows = {(r["a"], r["b"], r["scope"]): r for r in verdicts(runs, FAMILIES, 300, 0)}
    assert rows["dvdn_gt", "iql", "LBF"]["verdict"] == "above" and rows["dvdn_gt", "iql", "LBF"]["agreement"] == "as the paper"
    assert rows["dvdn_gt", "iql", "Easy"]["verdict"] == "too few seeds to tell"
    assert ("dvdn_gt", "vdn_ps", "LBF") not in rows and rows["dvdn_gt", "vdn_ps", "Easy"]["n_b"] == 1  # one task only
    assert rows["dvdn_gt", "vdn_ps", "Easy"]["paper"] == "below"  # 0.89 +- 0.02 against 0.94 +- 0.01


def test_report_stops_in_one_line_on_a_missing_results_folder(tmp_path):
    report = ["--results", "nowhere", "--out", "rep"]
    out = run_tool("report", *report, cwd=tmp_path)
    assert out.returncode != 0 and out.stderr.strip() == "error: nowhere is not a folder" and not (tmp_path / "rep").exists()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "broken.json").write_text("{")
    out = run_tool("report", "--results", "results", *report[2:], cwd=tmp_path)
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error: ")


VERDICT_CLAIM = re.compile(r"((?:IQL|DVDN|VDN)(?: \((?:PS|GT)\))?) against ((?:IQL|DVDN|VDN)(?: \((?:PS|GT)\))?) on "
                           r"(\w+): (above|below|no difference shown|too few seeds to tell)")  # fmt: skip
ORDERING_CLAIM = re.compile(r"((?:IQL|DVDN|VDN)(?: \((?:PS|GT)\))?(?: < (?:IQL|DVDN|VDN)(?: \((?:PS|GT)\))?)+) on (\w+): "
                            r"\**(holds|fails|not shown)")  # fmt: skip


def test_readme_states_only_the_verdicts_the_report_gives():
    """Every verdict or ordering the README and the results pages state is one the full report gives; the README's block
    carries exactly the report's verdicts and orderings over whole families; the report's verdicts are those the rule
    gives on today's records; and words that read a verdict off intervals are gone."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- report.py: begin -->")[1].split("<!-- report.py: end -->")[0]
    report = (ROOT / "docs" / "results" / "report.md").read_text()
    verdict_row = re.compile(r"^\| (.+?) against (.+?) \| (\w+)(?: \(\d tasks\))? \| .*? \| \*\*(.+?)\*\* \|", re.M)
    given = {(a, b, scope): verdict for a, b, scope, verdict in verdict_row.findall(report)}
    orderings = {(order, scope): result for order, scope, result in ORDERING_CLAIM.findall(report)}
    assert len(given) >= 20 and len(orderings) >= 9
    families = {family for family, *_ in FAMILIES}
    in_block = {(a, b, scope): verdict for a, b, scope, verdict in verdict_row.findall(block)}
    assert in_block == {key: v for key, v in given.items() if key[2] in families}, "the block's verdicts are the report's"
    assert {k: v for k, v in orderings.items() if k[1] in families} == {
        (order, scope): result for order, scope, result in ORDERING_CLAIM.findall(block)}
    notes = (ROOT / "docs" / "results-notes.md").read_text()
    pages = "".join((ROOT / "docs" / page).read_text() for page in ["table1.md", "marbler.md"])
    prose = readme.replace(block, "") + notes + pages
    prose = re.sub(r"\s+", " ", prose)
    claims = VERDICT_CLAIM.findall(prose)
    assert claims, "the prose quotes the verdicts"
    for a, b, scope, verdict in claims:
        assert given.get((a, b, scope)) == verdict, f"'{a} against {b} on {scope}: {verdict}' is not the report's verdict"
    for order, scope, result in ORDERING_CLAIM.findall(prose):
        assert orderings.get((order, scope)) == result, f"'{order} on {scope}: {result}' is not the report's"
    for phrase in ["CIs apart", "as the paper claims", "against the paper's claim", "comes from sharing", "bit for bit"]:
        assert phrase not in readme.split("## Results")[1].split("## The scripts")[0].replace(block, ""), phrase
        assert phrase not in notes.split("## Learning curves")[0], phrase
    runs = split_by_defaults(load_groups(ROOT / "results", [])[0])[0]
    now = {(COLUMNS[r["a"]], COLUMNS[r["b"]], r["scope"]): r["verdict"] for r in verdicts(runs, FAMILIES, 2000, 0)}
    assert now == given, "the report is stale: rerun python -m benchmark.report --out docs/results --readme README.md"


def fake_record(exp_name, env, seed, curve, **changed):
    """A record as a finished run with today's defaults (plus `changed` flags) would leave."""
    flags = {**default_flags(exp_name, env), "seed": str(seed), **{k: str(v) for k, v in changed.items()}}
    return {"env": env, "exp_name": exp_name, "seed": seed, "fingerprint": fingerprint(flags), "flags": flags,
            "eval": [[step, value] for step, value in curve]}  # fmt: skip


def test_records_merge_only_with_equal_fingerprints(tmp_path, monkeypatch):
    results = tmp_path / "results"
    for seed in [1, 2]:  # returns seed + step / 100: best at step 100, mean 2.5, CI over seeds {1, 2} is (2, 3)
        for exp_name in ["iql", "dvdn_gt"]:
            write_record(fake_record(exp_name, "lbf-easy", seed, [(0, seed), (50, seed + 0.5), (100, seed + 1)]), results)
    write_record(fake_record("iql", "lbf-easy", 3, [(0, 9.0), (100, 9.0)], total_timesteps=600000), results)
    older = fake_record("iql", "lbf-easy", 4, [(0, 7.0), (100, 7.0)])
    older["fingerprint"] = "0123456789ab"  # same flags, older preset or code: its fingerprint differs
    (results / "lbf-easy__iql__4__0123456789ab.json").write_text(__import__("json").dumps(older))
    write_record(fake_record("iql", "lbf-easy", 1, [(0, 1.0), (50, 1.5), (100, 2.0)]), results)  # the same run again
    for exp_name, level in [("vdn_ps", 4.0), ("iql_ps", 0.5)]:
        write_record(fake_record(exp_name, "lbf-easy", 1, [(0, level), (100, level)]), results)
    assert len(read_records(results)) == 8  # one file per (env, exp_name, seed, fingerprint)
    flags = default_flags("iql", "lbf-easy")
    before = fingerprint(flags)
    monkeypatch.setitem(PRESET_VERSIONS, "lbf-easy", PRESET_VERSIONS.get("lbf-easy", 1) + 1)  # a preset changed
    assert fingerprint(flags) != before
    monkeypatch.undo()

    run_tool("report", "--results", "results", "--out", "rep", cwd=tmp_path, check=True)
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| Easy | 2.50 (-0.50, 0.50) n=2; paper 0.81 (-0.02, 0.02) | 2.50 (-0.50, 0.50) n=2; paper 0.89" in text
    assert "| Arctic | not run; paper -43.51 (-1.64, 1.65) |" in text
    # per cell, beside the paper's metric, each seed's mean over its last 10% of evaluations (the last one of three)
    assert "| Easy | IQL | 2 | 2M | 2.50 | 2.50 | 2.00, 3.00 |" in text
    # one task, 2 seeds against 1: no arrangement reaches p < 0.05, whatever the values
    assert "| DVDN (GT) against VDN (PS) | Easy | 2; 1 | 2M |" in text and "too few seeds to tell" in text
    assert "| **above** |" not in text and "| **below** |" not in text
    assert "| lbf-easy | IQL | 1 | 9.00 (no CI) (0) | 9.00 (100) | --total-timesteps 600000 |" in text
    assert "| lbf-easy | IQL | 1 | 7.00 (no CI) (0) | 7.00 (100) | (same flags; older code or preset) |" in text
    assert (tmp_path / "rep" / "lbf-easy.png").stat().st_size > 0


def test_runs_table_gives_each_seeds_own_best_and_the_commits_its_record_names(tmp_path):
    results = tmp_path / "results"
    # the seed mean peaks at step 100 (0.45 against 0.40 at step 50); seed 1 alone peaks at step 50
    for seed, curve in [(1, [(0, 0.1), (50, 0.5), (100, 0.3)]), (2, [(0, 0.1), (50, 0.3), (100, 0.6)])]:
        record = fake_record("dvdn_gt", "lbf-hard", seed, curve)
        started = ["b" * 40 + "-dirty", "c" * 40] if seed == 1 else []  # seed 2: a record older than started_by
        record.update(commit=f"{seed}" * 40, started_by=started, starts=max(len(started), 1), train_seconds=5400 * seed)
        write_record(record, results)
    write_record(fake_record("dvdn_gt", "lbf-hard", 3, [(0, 0.9)], total_timesteps=600000), results)  # not Table 1's
    text = runs_table(load_groups(results, [])[1])
    assert "| lbf-hard | DVDN (GT) | 1 | 0.50 (50) | 0.30 (100) | 1.5 h, 2 | bbbbbbb-dirty, ccccccc; 1111111 |" in text
    assert "| lbf-hard | DVDN (GT) | 2 | 0.60 (100) | 0.60 (100) | 3.0 h, 1 | not recorded; 2222222 |" in text
    assert "| 3 |" not in text and len(text.strip().splitlines()) == 6  # title, blank, header, rule, two runs


def test_report_rewrites_only_the_readme_block_between_its_markers(tmp_path):
    write_record(fake_record("vdn_ps", "lbf-hard", 1, [(0, 0.1), (100, 0.3)]), tmp_path / "results")
    readme = tmp_path / "README.md"
    before, after = "# Title\n\ntext above\n\n", "\n\n## Next\ntext below\n"
    readme.write_text(f"{before}<!-- report.py: begin -->\nstale table\n<!-- report.py: end -->{after}")
    report = ["--results", "results", "--out", "rep", "--n-resamples", "200", "--readme", "README.md"]
    run_tool("report", *report, cwd=tmp_path, check=True)
    text = readme.read_text()
    assert text.startswith(before + "<!-- report.py: begin -->\n") and text.endswith("<!-- report.py: end -->" + after)
    assert "stale table" not in text and "| Hard | not run; paper 0.43 (-0.01, 0.02) | not run; paper 0.52" in text
    assert "| 0.30 (no CI) n=1; paper 0.56 (-0.02, 0.02) |" in text and "| PCP | not run; paper 130.72" in text
    assert "### Per cell" not in text and "### Per cell" in (tmp_path / "rep" / "report.md").read_text()  # a short block
    run_tool("report", *report, cwd=tmp_path, check=True)
    assert readme.read_text() == text  # a second run changes nothing
    readme.write_text("no markers here\n")
    out = run_tool("report", *report, cwd=tmp_path)
    assert out.returncode != 0 and out.stderr.strip().splitlines()[-1].startswith("error: README.md needs one line <!--")
    assert readme.read_text() == "no markers here\n"


def test_table1_takes_marbler_runs_at_the_papers_5m_budget(tmp_path):
    """Table 1's MARBLER runs are 5M env steps (the scripts' default budget is LBF's 2M); a run at 2M goes apart."""
    results = tmp_path / "results"
    write_record(fake_record("vdn", "marbler-pcp-exact", 1, [(0, -5.0), (100, 12.0)], total_timesteps=5000000), results)
    write_record(fake_record("vdn", "marbler-pcp-exact", 2, [(0, -5.0), (100, 30.0)]), results)  # 2M: not Table 1's
    run_tool("report", "--results", "results", "--out", "rep", cwd=tmp_path, check=True)
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| PCP | not run; paper 130.72 (-0.81, 0.76) | not run; paper 133.02 (-0.67, 0.78) | 12.00 (no CI) n=1" in text
    assert "| marbler-pcp-exact | VDN | 1 | 30.00 (no CI) (100) | 30.00 (100) | --total-timesteps 2000000" in text


def test_report_gives_an_mpe_table_with_no_paper_values_and_reference_rows(tmp_path):
    """MPE gets Table 1's layout (the paper reports no MPE): every cell says it has no paper value, and each task's
    random play and heuristic team follow it as rows."""
    write_record(fake_record("vdn_ps", "mpe-tag", 1, [(0, 1.0), (100, 9.5)], total_timesteps=1000000), tmp_path / "results")
    run_tool("report", "--results", "results", "--out", "rep", "--n-resamples", "200", "--reps", "200", cwd=tmp_path,
             check=True)  # fmt: skip
    text = (tmp_path / "rep" / "report.md").read_text()
    none = "not run; no paper value"
    assert "\n".join(["### MPE (homogeneous; not in the paper)", "", "| task | IQL | DVDN (GT) | VDN (PS) |",
                      "|---|---|---|---|",
                      f"| Spread | {none} | {none} | {none} |",
                      "| Spread: uniform random (reference) | -80.50 | -80.50 | -80.50 |",
                      "| Spread: heuristic team (reference) | -24.80 | -24.80 | -24.80 |",
                      f"| Tag | {none} | {none} | 9.50 (no CI) n=1; no paper value |",
                      "| Tag: uniform random (reference) | 2.70 | 2.70 | 2.70 |",
                      "| Tag: heuristic team (reference) | 7.40 | 7.40 | 7.40 |",
                      f"| Adversary | {none} | {none} | {none} |",
                      "| Adversary: uniform random (reference) | -9.20 | -9.20 | -9.20 |",
                      "| Adversary: heuristic team (reference) | 20.60 | 20.60 | 20.60 |", ""]) in text  # fmt: skip
    assert "| Easy | not run; paper 0.81 (-0.02, 0.02) |" in text and "Easy: uniform random" not in text  # LBF as before


def test_table1_takes_mpe_runs_at_1m_and_sets_2m_runs_apart(tmp_path):
    """The MPE table's runs are 1M env steps (the scripts' default is LBF's 2M); a run at 2M goes to the other settings."""
    results = tmp_path / "results"
    for seed, level in [(1, -40.0), (2, -30.0)]:
        write_record(fake_record("iql", "mpe-spread", seed, [(0, -70.0), (100, level)], total_timesteps=1000000), results)
    write_record(fake_record("iql", "mpe-spread", 3, [(0, -70.0), (100, -20.0)]), results)  # 2M: not the table's
    run_tool("report", "--results", "results", "--out", "rep", "--n-resamples", "200", "--reps", "200", cwd=tmp_path,
             check=True)  # fmt: skip
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| Spread | -35.00 (-5.00, 5.00) n=2; no paper value | not run; no paper value |" in text
    assert "| Spread | IQL | 2 | 1M | -35.00 |" in text  # the per-cell metrics name the MPE budget
    assert "| mpe-spread | IQL | 1 | -20.00 (no CI) (100) | -20.00 (100) | --total-timesteps 2000000 |" in text


def test_mpe_family_is_normalised_by_the_heuristic_team_and_its_ordering_is_ours(tmp_path):
    """MPE is a family like LBF: its scores run from random play (0) to the heuristic team (1), its verdicts have no
    paper's reading, and Table 1's ordering on it is marked as our inference."""
    results = tmp_path / "results"
    for seed in [1, 2, 3]:
        for env, base in [("mpe-spread", -60.0), ("mpe-tag", 4.0), ("mpe-adversary", 0.0)]:
            for exp_name, shift in [("iql", 0.0), ("dvdn_gt", 5.0), ("vdn_ps", 10.0)]:
                curve = [(100, base + shift + seed / 100)]
                write_record(fake_record(exp_name, env, seed, curve, total_timesteps=1000000), results)
    runs = split_by_defaults(load_groups(results, [])[0])[0]
    assert score_matrix(runs, ["mpe-spread"], "iql")[0] == pytest.approx(np.array([[(s / 100 - 60 + 80.5) / (80.5 - 24.8)]
                                                                                   for s in [1, 2, 3]]))  # fmt: skip
    rows = verdicts(runs, FAMILIES, 300, 0)
    family = {(r["a"], r["b"]): r for r in rows if r["scope"] == "MPE"}
    assert sorted(family) == [("dvdn_gt", "iql"), ("dvdn_gt", "vdn_ps"), ("vdn_ps", "iql")]
    assert [family[pair]["verdict"] for pair in sorted(family)] == ["above", "below", "above"]
    mpe = {(r["paper"], r["agreement"]) for r in rows if r["envs"][0].startswith("mpe-")}
    assert mpe == {("no paper value", "cannot say")}
    assert ("- IQL < DVDN (GT) < VDN (PS) on MPE: **holds** (DVDN (GT) against IQL: above; against VDN (PS): below; the "
            "ordering is our inference: the paper reports no MPE)") in ordering_lines(rows, FAMILIES).splitlines()


def test_record_of_a_real_run_has_the_fingerprint_the_sweep_plans(tmp_path):
    from benchmark.records import git_commit
    from benchmark.sweep import planned_flags

    extra = ["--no-cuda", "--total-timesteps", "200", "--batch-size", "2", "--buffer-size", "10", "--eval-frequency", "100",
             "--eval-episodes", "1", "--learning-rate", "0.001"]  # fmt: skip
    grid = ["--scripts", str(ROOT / "iql.py"), "--envs", "lbf-hard", "--seeds", "7", "--out", "sw", "--results", "results"]
    began = time.time()
    out = sweep(*grid, "--", *extra, cwd=tmp_path)
    out_seconds = time.time() - began
    assert out.returncode == 0, out.stdout + out.stderr
    (record,) = read_records(tmp_path / "results")
    assert record["fingerprint"] == fingerprint(planned_flags(str(ROOT / "iql.py"), "lbf-hard", 7, extra))
    assert record["flags"]["learning_rate"] == "0.001" and record["seed"] == 7
    assert [step for step, _ in record["eval"]] == [100, 200] and record["env_version"] == 2
    assert record["started_by"] == [record["commit"]] == [git_commit(ROOT)]  # started once, ended on the same code
    assert record["machines"] == [machine()] and record["machines"][0]["cpu_capability"] in ("DEFAULT", "AVX2", "AVX512")
    assert record["starts"] == 1 and 0 < record["train_seconds"] < out_seconds + 1, (record["train_seconds"], out_seconds)
    run_tool("records", "--runs", "sw", "--results", "again", "--commit", "c", cwd=tmp_path, check=True)
    (again,) = read_records(tmp_path / "again")  # records.py finds the commits in the sweep's log too
    assert again["commit"] == "c" and again["started_by"] == record["started_by"] and again["eval"] == record["eval"]
    assert again["machines"] == record["machines"]  # and the machines
    (run_dir,) = (tmp_path / "sw").glob("lbf-hard__iql__7__*[0-9a-f]/runs/*")
    assert make_record(run_dir, "c")["started_by"] == []  # a run folder on its own says nothing of its start
    (events,) = run_dir.glob("events.out.tfevents.*")  # a resume writes a second event file: its time adds up
    shutil.copy(events, run_dir / (events.name + ".resumed"))
    resumed = make_record(run_dir, "c")
    assert resumed["starts"] == 2 and abs(resumed["train_seconds"] - 2 * record["train_seconds"]) <= 1
    for changed in [{"learning_rate": "0.002"}, {"env": "lbf-hard-2.0"}]:  # a flag or the preset's rules
        assert fingerprint({**record["flags"], **changed}) != record["fingerprint"]
    for free in [{"seed": "8"}, {"checkpoint_frequency": "1000"}, {"track": "True"}]:  # not a setting of the experiment
        assert fingerprint({**record["flags"], **free}) == record["fingerprint"]


def test_sweep_resume_and_report(tmp_path):
    for name in ["iql.py", "dvdn_gt.py"]:
        (tmp_path / name).write_text(FAKE_SCRIPT)
    (tmp_path / "broken.py").write_text(FAKE_SCRIPT.replace("args = tyro.cli(Args)", "raise SystemExit(3)"))

    def commit():  # a new commit of the checkout that holds the scripts (they stay untracked, so it is clean)
        git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "m"], check=True, capture_output=True)
        return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    first = commit()
    grid = ["--scripts", "iql.py", "dvdn_gt.py", "--envs", "lbf-easy", "--seeds", "1", "2", "--out", "sw", "--workers", "2",
            "--results", "None"]  # the fake scripts log no flags, so they leave no records
    out = sweep(*grid, "--", "--total-timesteps", "100", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    run_dirs = sorted(d for d in (tmp_path / "sw").iterdir() if d.is_dir())
    assert [d.name[:-14] for d in run_dirs] == [f"lbf-easy__{e}__{s}" for e in ["dvdn_gt", "iql"] for s in [1, 2]]
    assert all(re.fullmatch(r"[0-9a-f]{12}", d.name[-12:]) for d in run_dirs)  # the settings' fingerprint
    assert all((d / "done").exists() and "--total-timesteps 100" in (d / "log.txt").read_text() for d in run_dirs)

    # resume: an interrupted run (no done marker, leftover files) is wiped and rerun; finished runs are skipped
    events = sorted((tmp_path / "sw").rglob("events.out.tfevents.*"))
    (run_dirs[0] / "done").unlink()
    (run_dirs[0] / "stale.txt").write_text("partial")
    out = sweep(*grid, "--", "--total-timesteps", "100", cwd=tmp_path)
    assert out.returncode == 0 and "3 already done, 1 to run" in out.stdout, out.stdout + out.stderr
    assert not (run_dirs[0] / "stale.txt").exists() and (run_dirs[0] / "done").exists()
    assert sorted((tmp_path / "sw").rglob("events.out.tfevents.*"))[1:] == events[1:]  # untouched
    out = sweep(*grid, cwd=tmp_path)
    assert "4 already done, 0 to run" in out.stdout

    # a stopped run that left a checkpoint is resumed from it, not wiped
    (run_dirs[1] / "done").unlink()
    checkpoint = run_dirs[1] / "runs" / "lbf-easy__dvdn_gt__2__1" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    write_checkpoint(checkpoint)
    with open(run_dirs[1] / "log.txt", "a") as log:  # what the scripts print: progress lines and evaluations
        log.write("global_step=50, eval_episodic_return=0.1000\nglobal_step=60/100, SPS=370, ETA=0m01s\n"
                  "global_step=100, eval_episodic_return=0.5230\nglobal_step=110/200, SPS=371, ETA=0m01s\n")  # fmt: skip
    out = sweep(*grid, "--dry-run", cwd=tmp_path)
    assert (f"dvdn_gt.py --env lbf-easy --seed 2: resumes from {checkpoint.relative_to(tmp_path)}; "
            "logged up to step 110 of 200 at 371 SPS, last evaluation 0.523 at step 100") in out.stdout, out.stdout
    second = commit()  # the code changed between the run's start and its resume: its log names both commits
    out = sweep(*grid, "--", "--total-timesteps", "100", cwd=tmp_path)
    assert out.returncode == 0 and "3 already done, 1 to run" in out.stdout, out.stdout + out.stderr
    log = (run_dirs[1] / "log.txt").read_text().splitlines()
    assert log[-1].endswith(f"--total-timesteps 100 --resume {checkpoint.resolve()}") and "--resume" not in log[1]
    assert checkpoint.exists() and (run_dirs[1] / "done").exists()
    assert started_by(run_dirs[1]) == [first, second] and started_by(run_dirs[0]) == [first]

    # a failing run gets no done marker and makes the sweep exit non-zero
    broken = ["--scripts", "broken.py", "--envs", "lbf-easy", "--seeds", "1", "--out", "sw", "--results", "None"]
    out = sweep(*broken, cwd=tmp_path)
    assert out.returncode == 1 and not list((tmp_path / "sw").glob("lbf-easy__broken__1__*/done"))

    # other flags that change results are another experiment: run in dirs of their own, not skipped as done
    out = sweep(*grid, "--", "--total-timesteps", "100", "--learning-rate", "0.01", cwd=tmp_path)
    assert out.returncode == 0 and "0 already done, 4 to run" in out.stdout, out.stdout + out.stderr
    assert len(list((tmp_path / "sw").glob("lbf-easy__*__*__*/done"))) == 8
    out = sweep(*grid, "--", "--total-timesteps", "100", "--learning-rate", "0.01", cwd=tmp_path)
    assert "4 already done, 0 to run" in out.stdout, out.stdout


def stopped_fake_run(tmp_path):
    """(grid, the sweep's run dir, its run folder): a fake run swept to its end, then left with a checkpoint at its last
    step and no `done`, as a sweep stopped before writing it leaves it."""
    (tmp_path / "iql.py").write_text(FAKE_SCRIPT)
    grid = ["--scripts", "iql.py", "--envs", "lbf-easy", "--seeds", "1", "--out", "sw", "--results", "None", "--",
            "--total-timesteps", "100"]  # fmt: skip
    assert sweep(*grid, cwd=tmp_path).returncode == 0
    (path,) = (tmp_path / "sw").glob("lbf-easy__iql__1__*[0-9a-f]")
    (run,) = (path / "runs").iterdir()
    (path / "done").unlink()
    write_checkpoint(run / "checkpoint.pt")
    return grid, path, run


def test_sweep_records_a_run_stopped_after_its_last_checkpoint(tmp_path):
    """A run whose last checkpoint lies at its final step cannot resume (nothing is left to train): the sweep sees
    that its curve reaches the end and marks it done without starting the script again."""
    grid, path, run = stopped_fake_run(tmp_path)
    log = (path / "log.txt").read_text()
    out = sweep(*grid, cwd=tmp_path)
    assert out.returncode == 0 and (path / "done").exists(), out.stdout + out.stderr
    assert (path / "log.txt").read_text() == log + f"# {run.name} trained to the end; not resumed\n"  # not started
    assert len(list((path / "runs").iterdir())) == 1


def test_sweep_restarts_a_run_whose_checkpoint_is_damaged_and_says_so(tmp_path):
    grid, path, run = stopped_fake_run(tmp_path)
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:60])  # truncated, as a full disk leaves it
    for events in run.glob("events.out.tfevents.*"):
        events.unlink()  # as if stopped halfway: its curve does not reach the end
    out = sweep(*grid, cwd=tmp_path)
    message = f"restarted: sw/{path.name} from step 0, its checkpoint checkpoint.pt was damaged"
    assert out.returncode == 0 and message in out.stdout, out.stdout + out.stderr
    log = (path / "log.txt").read_text()
    assert log.startswith("# restarted from step 0: the checkpoint") and "--resume" not in log and (path / "done").exists()


def test_sweep_refuses_impossible_worker_counts_and_task_ids(tmp_path):
    (tmp_path / "iql.py").write_text(FAKE_SCRIPT)
    grid = ["--scripts", "iql.py", "--envs", "lbf-easy", "--seeds", "1", "2", "--out", "sw", "--results", "None"]
    for flags, message in [(["--workers", "0"], "error: --workers must be at least 1, got 0"),
                           (["--task-id", "2"], "error: --task-id must lie in [0, 1] for this grid, got 2")]:  # fmt: skip
        out = sweep(*grid, *flags, cwd=tmp_path)
        assert out.returncode != 0 and out.stderr.strip() == message and not (tmp_path / "sw").exists(), out.stderr


def test_a_stopped_sweep_leaves_no_trainer_behind(tmp_path):
    """SIGTERM or SIGKILL to a sweep ends the script it runs: the kernel signals the child when its parent dies, so a
    later sweep, which finds the run unlocked, never starts a second trainer beside a living one."""
    (tmp_path / "iql.py").write_text(FAKE_SCRIPT.replace('if __name__ == "__main__":', 'if __name__ == "__main__":\n'
        '    import os; open("pid", "w").write(str(os.getpid())); time.sleep(600)'))  # fmt: skip
    grid = ["--scripts", "iql.py", "--envs", "lbf-easy", "--seeds", "1", "--out", "sw", "--results", "None"]
    for stop in [signal.SIGTERM, signal.SIGKILL]:
        proc = subprocess.Popen(tool("sweep", *grid), cwd=tmp_path, env=TOOL_ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.time() + 120
        while not list((tmp_path / "sw").glob("*/pid")) and time.time() < deadline:
            time.sleep(0.1)
        (pid_file,) = (tmp_path / "sw").glob("*/pid")
        child = int(pid_file.read_text())
        proc.send_signal(stop)
        proc.wait(timeout=60)
        deadline = time.time() + 30
        while Path(f"/proc/{child}").exists() and "zombie" not in Path(f"/proc/{child}/status").read_text().lower() \
                and time.time() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text().lower(), stop
        pid_file.unlink()


def test_sweeps_sharing_a_folder_skip_a_run_another_one_holds_or_finished(tmp_path, capsys, monkeypatch):
    from benchmark.sweep import claim, run_dir, run_one

    (tmp_path / "iql.py").write_text(FAKE_SCRIPT)
    grid = ["--scripts", "iql.py", "--envs", "lbf-easy", "--seeds", "1", "--out", "sw", "--results", "None"]
    run = run_dir(tmp_path / "sw", str(tmp_path / "iql.py"), "lbf-easy", 1, [])
    run.mkdir(parents=True)
    (run / "log.txt").write_text("global_step=60/100, SPS=370, ETA=0m01s\n")
    lock = claim(run)  # as the sweep that trains this run holds it
    out = sweep(*grid, "--dry-run", cwd=tmp_path)
    assert "iql.py --env lbf-easy --seed 1: running in another sweep; logged up to step 60" in out.stdout, out.stdout
    out = sweep(*grid, "--", "--total-timesteps", "100", cwd=tmp_path)
    assert out.returncode == 0 and f"skipped: sw/{run.name} is running in another sweep" in out.stdout, out.stdout
    assert (run / "log.txt").read_text() == "global_step=60/100, SPS=370, ETA=0m01s\n" and not (run / "done").exists()
    lock.close()  # its holder stopped: the next sweep takes the run over
    assert sweep(*grid, "--", "--total-timesteps", "100", cwd=tmp_path).returncode == 0 and (run / "done").exists()

    # a run finished by another sweep after this one listed it is not run again
    log = (run / "log.txt").read_text()
    monkeypatch.chdir(tmp_path)  # so that "iql.py" is the fake script, should the check fail and train it
    assert run_one("iql.py", "lbf-easy", 1, tmp_path / "sw", [], None) == 0
    assert "was finished by another sweep" in capsys.readouterr().out and (run / "log.txt").read_text() == log


def test_seed_first_runs_every_cell_once_before_any_twice(tmp_path):
    grid = ["--scripts", str(ROOT / "iql.py"), str(ROOT / "vdn.py"), "--envs", "lbf-easy", "lbf-hard", "--seeds", "1", "2",
            "--results", "r"]  # fmt: skip
    out = sweep(*grid, "--seed-first", "--dry-run", "--", "--total-timesteps", "10", cwd=tmp_path)
    runs = [line.split(":")[0].split() for line in out.stdout.splitlines() if "--seed" in line]
    assert [run[-1] for run in runs] == ["1"] * 4 + ["2"] * 4 and len({(r[0], r[2]) for r in runs[:4]}) == 4
    assert sweep(*grid, "--seed-first", "--slurm", "job.sh", cwd=tmp_path).returncode == 0
    assert "--seed-first --task-id" in (tmp_path / "job.sh").read_text()  # the array's index means the same run


def test_sweep_stops_in_one_line_before_any_run_on_bad_input(tmp_path):
    """An unknown env, a missing script, a flag the script does not take or a flag value it cannot parse: an error that
    names the bad input (no traceback), a non-zero exit, and no run folder."""
    iql = str(ROOT / "iql.py")
    cases = [  # (scripts, env, flags after --, what the error says)
        (iql, "lbf-eazy", [], "error: unknown env 'lbf-eazy'; choose one of lbf-easy, lbf-medium"),
        ("nosuch.py", "lbf-easy", [], "error: no script nosuch.py"),
        (iql, "lbf-easy", ["--bogus", "3"], f"error: {iql} takes no --bogus 3 (see python {iql} --help)"),
        (iql, "lbf-easy", ["--total-timesteps", "many"], "--total-timesteps"),  # tyro's message names the flag
    ]
    for script, env, flags, message in cases:
        grid = ["--scripts", script, "--envs", env, "--seeds", "1", "--out", "sw", "--results", "r"]
        out = sweep(*grid, "--", *flags, cwd=tmp_path)
        assert out.returncode != 0 and "Traceback" not in out.stderr and message in out.stderr, out.stderr
        assert not (tmp_path / "sw").exists()
    # a Slurm job file may name scripts that lie where the job runs, not here
    assert sweep("--scripts", "nosuch.py", "--slurm", "job.sh", cwd=tmp_path).returncode == 0


def test_evaluation_tools_stop_in_one_line_on_bad_input(tmp_path):
    """No episodes, an epsilon outside [0, 1], a model outside a run folder, a task the scripted team does not play: an
    error that names the input, before any env is made."""
    cases = [  # (tool, its arguments, what the error says)
        ("evaluate", ["model.pt", "--episodes", "0"], "error: --episodes must be at least 1 and --epsilon in [0, 1]"),
        ("evaluate", ["model.pt", "--epsilon", "1.5"], "error: --episodes must be at least 1 and --epsilon in [0, 1]"),
        ("evaluate", ["model.pt"], "is not inside a run folder named {env}__{exp_name}__{seed}__{unix_time}"),
        ("studies.marbler_heuristics", ["--episodes", "0"], "error: --episodes must be at least 1; got 0"),
        ("studies.marbler_heuristics", ["--env", "marbler-pcp"], "--env marbler-pcp is not a Warehouse preset"),
        ("studies.consensus_error", ["--edges", "0", "2", "1"], "error: --edges must be two or more increasing numbers"),
        ("studies.consensus_rounds", ["--agents", "9"], "error: --agents must each lie in 2..7"),
        ("studies.consensus_rounds", ["--link-prob", "0"], "error: --link-prob must lie in (0, 1]"),
        ("studies.consensus_rounds", ["--rounds", "-1"], "error: --rounds must be one or more numbers >= 0"),
        ("mutants", ["--only", "no-such-mutant"], "error: unknown mutant no-such-mutant; choose from "),
        ("mutants", ["--timeout", "0"], "error: --timeout must be positive, got 0"),
        ("evaluate", ["model.pt", "--epsilon", "nan"], "error: --episodes must be at least 1 and --epsilon in [0, 1]"),
        ("studies.consensus_rounds", ["--link-prob", "nan"], "error: --link-prob must lie in (0, 1]"),
        ("studies.checkpoint_cost", ["--buffer-size", "0"], "error: --buffer-size must be at least 1, got 0"),
        ("studies.checkpoint_cost", ["--repeats", "0"], "error: --repeats must be at least 1, got 0"),
        ("studies.marbler_qp", ["--episodes", "0"], "error: --episodes must be at least 1, got 0"),
        ("studies.marbler_stats", ["--seed", "-1"], "error: --seed must lie in [0, 4294967295], got -1"),
        ("studies.mpe_heuristics", ["--episodes", "0"], "error: --episodes must be at least 1, got 0"),
        ("studies.random_returns", ["--seed", "-1"], "error: --seed must lie in [0, 4294967295], got -1"),
        ("studies.marbler_heuristics", ["--env-seed", "-1"], "error: --env-seed must lie in [0, 4294967295], got -1"),
        ("studies.gradient_step_cost", ["--steps", "0"], "error: --steps must be at least 1, got 0"),
        ("studies.run_cost", ["--vs", "no-such-commit"], "error: --vs no-such-commit is not a commit of this repository"),
        ("studies.run_cost", ["--vs", "HEAD", "--scripts", "ppo.py"], "error: --scripts ppo.py is not a training script"),
        ("records", ["--runs", "nowhere"], "error: --runs nowhere is not a folder"),
        ("records", ["--runs", "."], "error: no run folders ({env}__{exp_name}__{seed}__{unix_time}) under ."),
    ]
    for name, arguments, message in cases:
        out = run_tool(name, *arguments, cwd=tmp_path)
        assert out.returncode != 0 and "Traceback" not in out.stderr and message in out.stderr, out.stderr


def test_evaluate_stops_in_one_line_on_a_bad_model_and_takes_a_run_folder(tmp_path):
    """A missing file, a file that is no model, a truncated checkpoint, a model of another env (its run folder renamed),
    a seed numpy cannot take: one line each. A run folder that holds only a --save-model file is evaluated."""
    flags = ["--no-cuda", "--env", "lbf-hard", "--total-timesteps", "300", "--batch-size", "2", "--buffer-size", "10",
             "--eval-frequency", "300", "--eval-episodes", "2", "--save-model"]  # fmt: skip
    subprocess.run([sys.executable, str(ROOT / "iql.py"), *flags], cwd=tmp_path, check=True, capture_output=True,
                   timeout=TIMEOUT)  # fmt: skip
    (folder,) = (tmp_path / "runs").iterdir()
    (folder / "notes.pt").write_text("not a model")
    (folder / "checkpoint.pt").write_bytes((folder / "iql.pt").read_bytes()[:500])
    other = tmp_path / "runs" / folder.name.replace("lbf-hard", "marbler-pcp")
    other.mkdir()
    shutil.copy(folder / "iql.pt", other / "iql.pt")
    cases = [([str(folder / "nothing.pt")], f"error: no model at {folder / 'nothing.pt'}"),
             ([str(folder / "notes.pt")], f"error: {folder / 'notes.pt'} is not a model or checkpoint of iql.py"),
             ([str(folder / "checkpoint.pt")], f"error: {folder / 'checkpoint.pt'} is not a model or checkpoint of iql.py"),
             ([str(other)], "error: the model's 4 network(s) map 27 inputs to 6 actions; marbler-pcp has 4 agents"),
             ([str(folder / "iql.pt"), "--env-seed", "-1"], "error: --env-seed must lie in [0, 4294967295], got -1")]
    for arguments, message in cases:
        out = run_tool("evaluate", *arguments, "--episodes", "2", cwd=tmp_path)
        assert out.returncode != 0 and out.stderr.strip().splitlines() == [out.stderr.strip()], out.stderr
        assert out.stderr.startswith(message), (message, out.stderr)
    (folder / "checkpoint.pt").unlink()
    out = run_tool("evaluate", str(folder), "--episodes", "2", cwd=tmp_path)
    assert out.returncode == 0 and "2 episodes: mean return" in out.stdout, out.stdout + out.stderr


def test_mutant_survey_tells_a_caught_mutant_from_a_survivor(tmp_path):
    """On a one-function project: a broken line its test catches, a broken line no test sees (a survivor), a line the
    code no longer holds, a test that does not exist; each file is restored after its mutant, and a test that fails
    unbroken stops the survey. Then every mutant of benchmark/mutants.py must still name a line of today's code, once,
    and tests that exist."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "calc.py").write_text("def double(x):\n    return 2 * x  # twice\n")
    (tmp_path / "tests" / "test_calc.py").write_text(
        "import sys\nfrom pathlib import Path\n\nsys.path.insert(0, str(Path(__file__).parents[1]))\nfrom calc import double"
        "\n\n\ndef test_double():\n    assert double(3) == 6\n"
    )
    test = ("tests/test_calc.py::test_double",)
    mutants = [Mutant("times-three", "calc.py", "2 * x", "3 * x", test), Mutant("comment", "calc.py", "twice", "thrice", test),
               Mutant("gone", "calc.py", "x + x", "x", test)]  # fmt: skip
    rows = survey(tmp_path, mutants, timeout=TIMEOUT)
    verdicts = [(mutant.name, verdict, detail) for mutant, verdict, detail, _ in rows]
    assert verdicts[0][:2] == ("times-three", "caught") and verdicts[0][2].startswith("1 of 1 tests failed; test_double: ")
    assert "assert 9 == 6" in verdicts[0][2] and verdicts[1] == ("comment", "survived", "0 of 1 tests failed")
    assert verdicts[2][:2] == ("gone", "not applied")
    assert (tmp_path / "calc.py").read_text() == "def double(x):\n    return 2 * x  # twice\n"
    no_test = Mutant("no-such-test", "calc.py", "2 * x", "3 * x", ("tests/test_calc.py::test_triple",))
    assert survey(tmp_path, [no_test], timeout=TIMEOUT, baseline=False)[0][1:3] == ("not run", "0 of its 1 tests ran")
    (tmp_path / "calc.py").write_text("def double(x):\n    return x\n")
    with pytest.raises(SystemExit, match="do not all pass unbroken"):
        survey(tmp_path, mutants[1:2], timeout=TIMEOUT)

    assert len({mutant.name for mutant in MUTANTS}) == len(MUTANTS)
    for mutant in MUTANTS:
        assert (ROOT / mutant.file).read_text().count(mutant.line) == 1 and mutant.broken != mutant.line, mutant.name
        for node in mutant.tests:
            path, name = node.split("::")
            assert f"def {name.split('[')[0]}(" in (ROOT / path).read_text(), node


def write_scalars(run_dir, scalars, purge_step=None):
    """Each (tag, step, value) into run_dir as a training script logs it: a resume passes purge_step, its first step."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir), purge_step=purge_step)
    for tag, step, value in scalars:
        writer.add_scalar(tag, value, step)
    writer.close()


def test_consensus_error_averages_each_window_of_what_the_run_kept(tmp_path):
    """Window means of jtd_error and the root of td_loss's window mean; a resume's steps replace those its stopped
    process logged past the checkpoint; a run without jtd_error (not DVDN) gives None."""
    run = tmp_path / "lbf-easy__dvdn__1__1700000000"
    first = [(tag, step, value) for step, error, loss in [(100_000, 0.1, 3.0), (400_000, 0.3, 5.0), (700_000, 9.0, 99.0)]
             for tag, value in [("losses/jtd_error", error), ("losses/td_loss", loss)]]  # fmt: skip
    write_scalars(run, first)
    time.sleep(1.0)  # event files load in name order, and a name starts with the second it was made in
    resumed = [("losses/jtd_error", 600_000, 0.2), ("losses/td_loss", 600_000, 9.0)]
    write_scalars(run, resumed, purge_step=500_001)  # resumed from a checkpoint at 500k
    rows = consensus_error(run, (0.0, 0.5, 1.0, 2.0))
    assert [row[:2] for row in rows] == [(0.0, 0.5), (0.5, 1.0)]  # 1M-2M holds no step
    assert np.allclose([row[2:] for row in rows], [[0.2, 2.0], [0.2, 3.0]])
    other = tmp_path / "lbf-easy__vdn__1__1700000000"
    write_scalars(other, [("losses/td_loss", 100_000, 1.0)])
    assert consensus_error(other, (0.0, 1.0)) is None


def test_consensus_rounds_leave_the_share_the_graph_law_gives():
    """a_K over every connected graph: the closed form for 3 agents, the same share of every TD vector's disagreement
    (the claim the tool's one number per K rests on), and the law is the one envs.graph.random_graph draws from."""
    import dvdn
    from envs.graph import random_graph

    law3 = graph_law(3, 0.5)  # a path (prob. 3/4 given connected; W's other eigenvalues 2/3 and 0) or the triangle (W = J)
    assert np.isclose(sum(p for _, p in law3), 1.0)
    assert np.allclose([disagreement_left(law3, k) for k in range(4)], [1.0, 0.375 * 4 / 9, 0.375 * (4 / 9) ** 2,
                                                                       0.375 * (4 / 9) ** 3])  # fmt: skip
    assert np.isclose(disagreement_left(graph_law(2, 0.3), 1), 0.0)  # two agents average exactly in one round
    law4 = graph_law(4, 0.3)
    rng = np.random.default_rng(0)
    for rounds in (1, 2):
        for _ in range(3):
            delta = rng.normal(size=4) + 5.0
            left = sum(p * np.sum((np.linalg.matrix_power(w, rounds) @ delta - delta.mean()) ** 2) for w, p in law4)
            assert np.isclose(left, disagreement_left(law4, rounds) * np.sum((delta - delta.mean()) ** 2))
    np.random.seed(0)
    draws = [np.sum((dvdn.metropolis_weights(random_graph(4, 0.3)) - 0.25) ** 2) / 3 for _ in range(4000)]
    assert abs(np.mean(draws) - disagreement_left(law4, 1)) < 4 * np.std(draws) / np.sqrt(len(draws))


def slurm_is_up():
    return shutil.which("sbatch") is not None and subprocess.run(["sinfo"], capture_output=True).returncode == 0


@pytest.mark.skipif(not slurm_is_up(), reason="opt-in: needs a running Slurm (docs/slurm.md starts a one-node one)")
def test_a_real_slurm_runs_the_job_array(tmp_path):
    """The script `sweep.py --slurm` writes, submitted to a real Slurm from the repository root: every task leaves its
    run folder and its result record, and the report reads them."""
    grid = ["--scripts", "vdn.py", "dvdn_gt.py", "--envs", "lbf-hard", "--seeds", "1", "2", "--out", str(tmp_path / "sw"),
            "--results", str(tmp_path / "results"), "--slurm", str(tmp_path / "job.sh"), "--",
            "--total-timesteps", "300", "--batch-size", "2", "--buffer-size", "10", "--eval-frequency", "150",
            "--eval-episodes", "2", "--no-cuda"]  # fmt: skip
    assert sweep(*grid, cwd=ROOT).returncode == 0
    submitted = subprocess.run(["sbatch", "--wait", str(tmp_path / "job.sh")], cwd=ROOT, capture_output=True, text=True,
                               timeout=600)  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    records = sorted(p.name.split("__")[1] + p.name.split("__")[2] for p in (tmp_path / "results").glob("*.json"))
    assert records == ["dvdn_gt1", "dvdn_gt2", "vdn1", "vdn2"]
    assert len(list((tmp_path / "sw").glob("slurm-*_*.out"))) == 4
    report = run_tool("report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "report"), cwd=ROOT)
    assert "found 4 runs" in report.stdout, report.stdout + report.stderr


def test_slurm_and_wandb_files(tmp_path):
    grid = ["--scripts", "iql.py", "vdn.py", "--envs", "lbf-easy", "lbf-hard", "--seeds", "1", "2", "3"]
    out = sweep(*grid, "--slurm", "job.sh", "--wandb-sweep", "sweep.yaml", "--", "--total-timesteps", "1000", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    job = (tmp_path / "job.sh").read_text()
    assert "#SBATCH --array=0-11" in job and '--task-id "$SLURM_ARRAY_TASK_ID" -- --total-timesteps 1000' in job
    assert "\npython -m benchmark.sweep --scripts iql.py vdn.py " in job  # run from the root, where sbatch is called

    import yaml

    config = yaml.safe_load((tmp_path / "sweep.yaml").read_text())
    assert config["method"] == "grid" and config["parameters"]["seeds"] == {"values": [1, 2, 3]}
    assert config["command"][-3:] == ["--track", "--total-timesteps", "1000"]
    # expand the command as the wandb agent does, then check that the sweep accepts it
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    macros = create_sweep_command_args({"args": {"scripts": {"value": "vdn.py"}, "envs": {"value": "lbf-hard"},
                                                 "seeds": {"value": 3}}})  # fmt: skip
    assert config["command"][:4] == ["${env}", "${interpreter}", "-m", "benchmark.sweep"]
    assert (ROOT / config["program"]).is_file()  # the file it names, though the command runs the module
    cmd = [w for word in config["command"][4:] for w in (macros[word[2:-1]] if word.startswith("${") else [word])]
    assert cmd[:6] == ["--scripts", "vdn.py", "--envs", "lbf-hard", "--seeds", "3"]
    cmd.insert(cmd.index("--"), "--dry-run")
    out = sweep(*cmd, cwd=ROOT)  # the agent runs it from the repository root, where the scripts are (dry: writes nothing)
    assert out.returncode == 0 and "vdn.py --env lbf-hard --seed 3" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_evaluate_reproduces_the_end_of_training_return(script, tmp_path):
    """From the --save-model file and from the last checkpoint (written at step 600 here: the last episode ends there)."""
    flags = ["--no-cuda", "--env", "lbf-hard", "--seed", "4", "--total-timesteps", "600", "--batch-size", "2",
             "--buffer-size", "10", "--eval-frequency", "600", "--eval-episodes", "5", "--eval-epsilon", "0.3", "--save-model",
             "--checkpoint-frequency", "300"]  # fmt: skip
    out = subprocess.run([sys.executable, str(ROOT / script), *flags], cwd=tmp_path, check=True, capture_output=True,
                         text=True, timeout=TIMEOUT).stdout  # fmt: skip
    trained = out.split("global_step=600, eval_episodic_return=")[1].split()[0]
    (model,) = (tmp_path / "runs").glob(f"*/{script[:-3]}.pt")
    for saved in [model, model.parent / "checkpoint.pt"]:
        evaluate = [str(saved), "--episodes", "5", "--epsilon", "0.3", "--video", str(tmp_path / "first.gif")]
        out = run_tool("evaluate", *evaluate, cwd=tmp_path, check=True).stdout
        assert f"mean return {trained} " in out, (saved, trained, out)
        assert saved == model or "step 600 of 600" in out
        assert (tmp_path / "first.gif").stat().st_size > 0
        (tmp_path / "first.gif").unlink()


def test_lbf_food_tally_agrees_with_the_team_return():
    """LBF pays a team, for each food eaten, its level over the level sum of the food at the start (normalised rewards),
    so every episode's return is the tally's eaten level sum over its start level sum. A team that never moves eats
    nothing and ends standing still."""
    from benchmark.evaluate import FoodTally, evaluate
    from benchmark.records import load_script
    from envs import make_env

    script, env = load_script(str(ROOT / "iql.py")), make_env("lbf-medium", 7)
    agents = [script.QNetwork(env.obs_size, env.n_actions, 8) for _ in range(env.n_agents)]
    tally = FoodTally(still=5)
    returns = evaluate(script, env, agents, 20, 1.0, np.random.default_rng(0), tallies=[tally])  # epsilon 1: random moves
    def level_sum(counts):
        return sum(level * n for level, n in counts.items())

    assert sum(e["eaten"][2] for e in tally.episodes) > 0 and len(tally.episodes) == 20  # food of levels 1 and 2 eaten
    eaten_share = [level_sum(e["eaten"]) / level_sum(e["spawned"]) for e in tally.episodes]
    np.testing.assert_allclose(returns, eaten_share, rtol=1e-5)
    assert not any(e["stood_still"] for e in tally.episodes)  # random agents rarely keep still for 5 steps
    for agent in agents:  # action 0 (none) always greedy: nobody moves
        agent.fc2.bias.data[0] = 1e3
    tally = FoodTally(still=5)
    returns = evaluate(script, env, agents, 3, 0.0, np.random.default_rng(0), tallies=[tally])
    assert not returns.any() and all(e["stood_still"] and not e["eaten"] for e in tally.episodes)
    assert "grid cleared in 0 of 3 episodes; 3 episodes end with food left" in tally.summary()


def test_end_tally_agrees_with_the_pcp_return():
    """PCP pays each agent +1 per prey sensed, +5 per prey captured and -0.05 a step, and -5 instead on a violation step,
    which ends the episode. So on every episode without a violation, sensed = return / 4 + 0.05 * length - 5 * captured,
    with captured = 6 - the prey the tally finds left, is a whole number between captured and 6."""
    from benchmark.evaluate import EndTally, evaluate
    from benchmark.records import load_script
    from envs import make_env

    script, env = load_script(str(ROOT / "iql.py")), make_env("marbler-pcp-exact", 3)
    agents = [script.QNetwork(env.obs_size, env.n_actions, 8) for _ in range(env.n_agents)]
    tally = EndTally()
    returns = evaluate(script, env, agents, 15, 1.0, np.random.default_rng(0), tallies=[tally])  # random actions
    ends = [e["end"] for e in tally.episodes]
    assert len(ends) == 15 and "time-out" in ends and {"boundary", "collision"} & set(ends)  # both kinds of end occur
    for ret, episode in zip(returns, tally.episodes):
        violation = episode["end"] in ("boundary", "collision", "collision_boundary")
        assert violation == (episode["remaining"] is None)  # PCP reports the prey left on every end but a violation
        assert (episode["length"] == env.episode_limit) == (episode["end"] == "time-out")
        if not violation:
            captured = 6 - episode["remaining"]
            sensed = ret / 4 + 0.05 * episode["length"] - 5 * captured
            assert abs(sensed - round(sensed)) < 1e-6 and captured <= round(sensed) <= 6, (ret, episode)
    assert f"(of 15); mean length {np.mean([e['length'] for e in tally.episodes]):.1f}" in tally.summary()


def test_end_tally_counts_each_warehouse_robots_pickups_and_deliveries():
    """Warehouse pays a robot +1 per pick-up and +3 per delivery, and -5 to every robot instead on a violation step,
    which ends the episode. The tally reads the task's load flags, not the rewards, so the return checks it: on every
    episode, return = pick-ups + 3 deliveries, less 30 after a violation. A scripted team (each robot heads for its load
    zone, then its unload zone) with some random moves delivers; random play leaves the arena."""
    from benchmark.evaluate import EndTally, evaluate
    from benchmark.studies.marbler_heuristics import warehouse_team
    from envs import make_env

    env = make_env("marbler-warehouse-exact", 3)
    scripted, tally = warehouse_team(env), EndTally()
    returns = np.concatenate([evaluate(scripted, env, None, 4, 0.2, np.random.default_rng(0), tallies=[tally]),
                              evaluate(scripted, env, None, 8, 1.0, np.random.default_rng(1), tallies=[tally])])
    violations = [e["end"] in ("boundary", "collision", "collision_boundary") for e in tally.episodes]
    pickups, deliveries = (np.array([e[key] for e in tally.episodes]) for key in ("pickups", "deliveries"))
    assert len(tally.episodes) == 12 and any(violations) and deliveries[:4].sum(1).min() > 0  # each scripted episode delivers
    assert returns == pytest.approx(pickups.sum(1) + 3 * deliveries.sum(1) - 30 * np.array(violations))
    assert ((pickups - deliveries) >= 0).all() and ((pickups - deliveries) <= 1).all()  # a robot carries one load
    red = ", ".join(f"{d:.2f}" for d in deliveries.mean(0)[1::2])
    assert f"deliveries {deliveries.sum(1).mean():.2f}, deliveries by robot: Green (0, 2, 4): " in tally.summary()
    assert tally.summary().endswith(f"; Red (1, 3, 5): {red}")
