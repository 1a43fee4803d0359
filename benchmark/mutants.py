"""Breaks the lines that carry each algorithm, one at a time, and checks that the tests guarding them fail.

    python -m benchmark.mutants                        # every mutant, after the guarding tests pass unbroken
    python -m benchmark.mutants --only dvdn-others-sum-without-n gt-tracker-keeps-old-gradient
    python -m benchmark.mutants --list

A mutant is one line of one file as it stands (it must occur there exactly once), the line broken on purpose, and the
behaviour tests meant to catch it. Each runs in a scratch copy of the working tree, so the checkout is never touched:
the broken file is written, its tests run (`pytest`, one process per mutant), and the file is restored. A mutant is
caught when at least one of its tests fails, and survives when they all pass: a survivor is a bug the suite would let
through. First the guarding tests run on the unbroken copy, since a test that already fails catches nothing.
Exit status: 0 when every mutant is caught, 1 when one survives or times out or a test fails unbroken, 2 when a mutant
no longer matches the code or names a test that does not exist (rewrite it with the line).

It tests the test suite: not part of the results pipeline and not a study (benchmark/studies/), it stays at the top of
the package beside the other tools a contributor runs routinely, since a subpackage for one module would only lengthen
its command.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

ROOT = Path(__file__).resolve().parents[1]
ALGO, CONSISTENCY, GRAPH = "tests/test_algorithms.py::", "tests/test_consistency.py::", "tests/test_graph.py::"
CLIP_TEST = CONSISTENCY + "test_gradient_norm_is_clipped_over_what_each_optimiser_steps"
CLIP_EACH = "nn.utils.clip_grad_norm_(q_networks[i].parameters(), args.max_grad_norm)"  # iql.py and dvdn.py
CLIP_ALL = "nn.utils.clip_grad_norm_([p for q in q_networks for p in q.parameters()], args.max_grad_norm)"
BUFFER_TAIL = "self.terminated[p, t:], self.mask[p, t:] = 0, 0"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    line: str  # as it stands in `file`, exactly once
    broken: str
    tests: tuple[str, ...]  # pytest node ids


MUTANTS = [
    # dvdn.py: the consensus estimate of the others' TD, eq. (4a)
    Mutant("dvdn-others-sum-without-n", "dvdn.py",
           "delta_minus = n_agents * consensus(deltas.detach(), W, args.consensus_rounds) - deltas.detach()",
           "delta_minus = consensus(deltas.detach(), W, args.consensus_rounds) - deltas.detach()",
           (CONSISTENCY + "test_decentralised_step_is_the_algorithm_written_out[dvdn.py]",)),
    Mutant("dvdn-others-not-held-constant", "dvdn.py",
           "delta_minus = n_agents * consensus(deltas.detach(), W, args.consensus_rounds) - deltas.detach()",
           "delta_minus = n_agents * consensus(deltas, W, args.consensus_rounds) - deltas.detach()",
           (CONSISTENCY + "test_decentralised_step_is_the_algorithm_written_out[dvdn.py]",)),
    Mutant("dvdn-reward-not-shared", "dvdn.py", "actions_b[:, :, i], rewards_b / n_agents,", "actions_b[:, :, i], rewards_b,",
           (ALGO + "test_dvdn_with_complete_graph_equals_vdn",)),
    Mutant("dvdn-graph-never-switches", "dvdn.py",
           'if args.topology == "switching":\n                adj = random_graph(',
           'if args.topology == "never":\n                adj = random_graph(',
           (CONSISTENCY + "test_decentralised_step_is_the_algorithm_written_out[dvdn.py]",)),
    Mutant("dvdn-metropolis-min-degree", "dvdn.py",
           "w = adj / (1.0 + np.maximum(deg[:, None], deg[None, :]))",
           "w = adj / (1.0 + np.minimum(deg[:, None], deg[None, :]))",
           tuple(ALGO + f"test_metropolis_weights_are_symmetric_doubly_stochastic[{n}]" for n in (3, 8))),
    Mutant("dvdn-consensus-one-round-short", "dvdn.py", "for _ in range(rounds):", "for _ in range(rounds - 1):",
           (ALGO + "test_exact_and_no_consensus", ALGO + "test_switching_consensus_converges_to_the_mean")),
    Mutant("graph-not-checked-connected", "envs/graph.py",
           "if (np.linalg.matrix_power(np.eye(n_agents) + adj, n_agents - 1) > 0).all():", "if True:",
           (GRAPH + "test_random_graph_is_connected_and_varies",)),
    Mutant("graph-link-prob-never-refused", "envs/graph.py", "connected_probability(n_agents, link_prob) < 1e-3:",
           "connected_probability(n_agents, link_prob) < 0:",
           (GRAPH + "test_a_random_topology_refuses_a_link_prob_that_rarely_connects[switching]",)),
    Mutant("graph-complete-has-no-links", "envs/graph.py", 'if topology == "complete" else', 'if topology == "none" else',
           (GRAPH + "test_first_graph_of_each_topology", ALGO + "test_dvdn_with_complete_graph_equals_vdn")),
    # dvdn_gt.py: gradient tracking with GTAdam, eqs. (4c)-(4d)
    Mutant("gt-tracker-keeps-old-gradient", "dvdn_gt.py", "z = W @ z + g - g_prev", "z = W @ z + g",
           (ALGO + "test_tracker_mean_equals_mean_gradient",)),
    Mutant("gt-parameters-not-mixed", "dvdn_gt.py", "w = W @ w - lr * m_hat", "w = w - lr * m_hat",
           (CONSISTENCY + "test_gtadam_mixes_the_parameters_of_neighbours",)),
    Mutant("gt-last-gradient-never-kept", "dvdn_gt.py", "            g_prev = g\n", "            g_prev = g_prev\n",
           (CONSISTENCY + "test_decentralised_step_is_the_algorithm_written_out[dvdn_gt.py]",)),
    Mutant("gt-bias-correction-a-step-late", "dvdn_gt.py", "m / (1 - beta1**t)", "m / (1 - beta1 ** (t + 1))",
           (ALGO + "test_no_links_is_adam_on_the_local_gradient[True]", ALGO + "test_tracker_mean_equals_mean_gradient")),
    Mutant("gt-agents-start-apart", "dvdn_gt.py", "q_networks[i].load_state_dict(q_networks[0].state_dict())", "pass",
           (ALGO + "test_gt_agents_start_from_the_same_weights",)),
    # vdn.py and vdn_ps.py: the joint TD and the shared network's agent ids
    Mutant("vdn-mean-not-sum", "vdn.py", "loss = (deltas.sum(-1) ** 2 * mask_b)", "loss = (deltas.mean(-1) ** 2 * mask_b)",
           (CONSISTENCY + "test_loss_is_the_algorithms_loss_written_out[vdn.py]",)),
    Mutant("vdn-padding-reaches-the-loss", "vdn.py", "loss = (deltas.sum(-1) ** 2 * mask_b).sum()",
           "loss = (deltas.sum(-1) ** 2).sum()", (CONSISTENCY + "test_padded_steps_change_no_loss_or_gradient[vdn.py]",)),
    Mutant("vdn-ps-acts-without-agent-ids", "vdn_ps.py",
           "x = torch.cat([torch.as_tensor(np.stack(obs), device=device), torch.eye(len(obs), device=device)], -1)",
           "x = torch.cat([torch.as_tensor(np.stack(obs), device=device), torch.zeros(len(obs), len(obs))], -1)",
           (CONSISTENCY + "test_training_sees_the_q_values_that_acting_saw[vdn_ps.py]",)),
    # iql_ps.py: each agent's own TD on the whole team reward
    Mutant("iql-ps-reward-shared", "iql_ps.py", "rewards_b.repeat_interleave(n_agents, 0), terminated_b",
           "(rewards_b / n_agents).repeat_interleave(n_agents, 0), terminated_b",
           (CONSISTENCY + "test_loss_is_the_algorithms_loss_written_out[iql_ps.py]",)),
    # the gradient clip: each agent's own in IQL and DVDN, all agents' together in VDN
    Mutant("iql-clips-all-agents-together", "iql.py", CLIP_EACH, CLIP_ALL, (CLIP_TEST + "[iql.py]",)),
    Mutant("vdn-clips-each-agent-alone", "vdn.py", "nn.utils.clip_grad_norm_(params, args.max_grad_norm)",
           "[nn.utils.clip_grad_norm_(q.parameters(), args.max_grad_norm) for q in q_networks]", (CLIP_TEST + "[vdn.py]",)),
    Mutant("dvdn-clips-all-agents-together", "dvdn.py", CLIP_EACH, CLIP_ALL, (CLIP_TEST + "[dvdn.py]",)),
    # iql.py: the loop every script shares
    Mutant("time-out-stored-as-terminal", "iql.py", "rb.add(obs, actions, sum(rewards), next_obs, terminated)",
           "rb.add(obs, actions, sum(rewards), next_obs, terminated or truncated)",
           (CONSISTENCY + "test_the_shared_loop_is_the_loop_written_out[iql.py]",)),
    Mutant("hidden-state-not-reset", "iql.py", "            obs, _ = env.reset()\n            hidden = None",
           "            obs, _ = env.reset()", (CONSISTENCY + "test_training_sees_the_q_values_that_acting_saw[iql.py]",)),
    Mutant("double-q-picks-with-the-target", "iql.py", "(q_values if double_q else target_q)",
           "(target_q if double_q else q_values)", (ALGO + "test_td_error_double_q_by_hand[iql]",)),
    Mutant("target-update-swapped", "iql.py", "args.tau * param.data + (1.0 - args.tau) * target_param.data",
           "(1.0 - args.tau) * param.data + args.tau * target_param.data",
           (CONSISTENCY + "test_the_shared_loop_is_the_loop_written_out[iql.py]",)),
    Mutant("rewards-divided-by-variance", "iql.py", "np.sqrt(reward_stats.var + 1e-8)", "(reward_stats.var + 1e-8)",
           (CONSISTENCY + "test_the_shared_loop_is_the_loop_written_out[iql.py]",)),
    Mutant("rewards-standardised-with-the-padding", "iql.py", "reward_stats.update(rewards_b[mask_b > 0])",
           "reward_stats.update(rewards_b)", (CONSISTENCY + "test_the_shared_loop_is_the_loop_written_out[iql.py]",)),
    Mutant("buffer-keeps-an-old-tail", "iql.py", BUFFER_TAIL, "self.terminated[p, t:] = 0",
           (ALGO + "test_buffer_wraps_around_and_clears_old_tails[iql]",)),
    Mutant("child-buffer-keeps-an-old-tail", "vdn_ps.py", BUFFER_TAIL, "self.terminated[p, t:] = 0",
           (ALGO + "test_buffer_wraps_around_and_clears_old_tails[vdn_ps]",)),
    Mutant("resume-forgets-numpys-generator", "checkpoints.py", 'np.random.set_state(checkpoint["rng"]["numpy"])', "pass",
           ("tests/test_checkpoint.py::test_killed_and_resumed_run_is_bitwise_the_straight_run[iql.py-lbf-hard]",)),
    Mutant("epsilon-never-decays", "iql.py", "return max(slope * t + start_e, end_e)",
           "return max(start_e, end_e)", (ALGO + "test_linear_schedule[iql]",)),
    # envs/: what the wrappers report
    Mutant("lbf-time-out-as-terminal", "envs/lbf.py", "return obs, rewards, done and not truncated, truncated, info",
           "return obs, rewards, done, truncated, info",
           ("tests/test_lbf.py::test_a_time_out_is_truncated_and_clearing_the_food_terminates",)),
    Mutant("lbf-food-by-the-2-0-rule", "envs/lbf.py", "super().spawn_food(max_num_food, min_levels, max_levels - 1)",
           "super().spawn_food(max_num_food, min_levels, max_levels)",
           ("tests/test_lbf.py::test_presets_use_the_1x_spawn_rules_and_2_0_does_not[lbf-easy]",)),
    Mutant("lbf-agents-start-on-the-last-line", "envs/lbf.py",
           "return row < self.rows - 1 and col < self.cols - 1 and super()._is_empty_location(row, col)",
           "return super()._is_empty_location(row, col)",
           ("tests/test_lbf.py::test_presets_use_the_1x_spawn_rules_and_2_0_does_not[lbf-easy]",)),
    Mutant("warehouse-violation-unpunished", "envs/marbler.py", "rewards = np.full(self.n_agents, self.penalty)",
           "rewards = np.zeros(self.n_agents)",
           ("tests/test_marbler.py::test_violation_ends_episode_with_penalty[marbler-warehouse--5]",)),
    Mutant("robotarium-collision-at-half-distance", "envs/robotarium.py",
           "collision = (np.sqrt(dx * dx + dy * dy) <= COLLISION_DIST)",
           "collision = (np.sqrt(dx * dx + dy * dy) <= COLLISION_DIST / 2)",
           ("tests/test_marbler.py::test_violation_geometry",)),
    Mutant("exact-suffix-solves-with-cvxopt", "envs/__init__.py",
           'solver = "daqp" if name.endswith("-exact") else "cvxopt"', 'solver = "cvxopt"',
           ("tests/test_marbler.py::test_the_exact_suffix_picks_the_exact_solver[marbler-pcp]",)),
    Mutant("robotarium-spawn-lattice-shifted", "envs/robotarium.py", "c = rng.choice(nx * ny, n, replace=False) + 1",
           "c = rng.choice(nx * ny, n, replace=False)", ("tests/test_marbler.py::test_spawn_sets[marbler-warehouse]",)),
    Mutant("robotarium-barrier-at-half-radius", "envs/robotarium.py", "h = (ex * ex + ey * ey) - SAFETY_RADIUS**2",
           "h = (ex * ex + ey * ey) - (SAFETY_RADIUS / 2) ** 2",
           ("tests/test_marbler.py::test_random_policy_statistics_fast_solver[marbler-warehouse]",)),
    Mutant("robotarium-barrier-pushes-pairs-together", "envs/robotarium.py",
           "self.A.flat[self.flat_i], self.A.flat[self.flat_j] = -2 * e, 2 * e",
           "self.A.flat[self.flat_i], self.A.flat[self.flat_j] = 2 * e, -2 * e",
           ("tests/test_marbler.py::test_random_policy_statistics_fast_solver[marbler-warehouse]",)),
    Mutant("mpe-sees-the-farthest", "envs/mpe.py", "return min(entities, key=lambda e:", "return max(entities, key=lambda e:",
           ("tests/test_mpe.py::test_partial_observations_are_the_authors[mpe-tag]",)),
    # the guards against silently wrong runs: a NaN flag, a NaN loss, another script's checkpoint
    Mutant("flags-let-nan-through", "iql.py", 'rules = [(lambda x: 0 < x < np.inf, "be positive and finite", positive),',
           'rules = [(lambda x: x > 0, "be positive and finite", positive),',
           ("tests/test_scripts.py::test_nan_and_inf_flags_stop_in_one_line[iql.py--learning-rate=inf]",)),
    Mutant("nan-loss-trains-on", "dvdn_gt.py", "if not torch.isfinite(loss):", "if False:",
           ("tests/test_checkpoint.py::test_a_loss_that_overflows_stops_the_run_before_the_update[dvdn_gt.py]",)),
    Mutant("resume-takes-any-script", "checkpoints.py", 'if checkpoint["script"] != os.path.basename(script):', "if False:",
           ("tests/test_checkpoint.py::test_a_checkpoint_resumes_only_in_its_own_script_and_only_when_readable",)),
    Mutant("untrained-network-saved", "iql.py", "if gradient_step == 0:", "if False:",
           ("tests/test_scripts.py::test_bad_input_gives_one_line[iql.py-flags23-no gradient step]",)),
    # the progress line: SPS and ETA count from the step a run resumed at, and a line comes at least every 30 s
    Mutant("progress-counts-from-step-zero", "envs/__init__.py", "sps = (steps - self.start_step) /", "sps = steps /",
           ("tests/test_scripts.py::test_progress_line_every_10k_steps_and_every_30_seconds",)),
    Mutant("progress-silent-between-10k-steps", "envs/__init__.py", "time.time() - self.last_print <= 30:", "True:",
           ("tests/test_scripts.py::test_progress_line_every_10k_steps_and_every_30_seconds",)),
    # the sweep: runs with other flags, a run finished after its last checkpoint, a stopped sweep's child
    Mutant("sweep-folder-ignores-the-flags", "benchmark/sweep.py", "fingerprint(planned_flags(script, env, seed, extra))}",
           "fingerprint(planned_flags(script, env, seed, []))}", ("tests/test_benchmark.py::test_sweep_resume_and_report",)),
    Mutant("sweep-resumes-a-finished-run", "benchmark/sweep.py",
           'finished = trained_to_the_end(path, planned_flags(script, env, seed, extra)["total_timesteps"])',
           "finished = None",
           ("tests/test_benchmark.py::test_sweep_records_a_run_stopped_after_its_last_checkpoint",)),
    Mutant("sweep-child-outlives-the-sweep", "benchmark/sweep.py",
           'preexec_fn=die_with_parent if sys.platform == "linux" else None', "preexec_fn=None",
           ("tests/test_benchmark.py::test_a_stopped_sweep_leaves_no_trainer_behind",)),
    # the report's MPE table: its budget, its normalisation
    Mutant("report-mpe-cells-at-the-default-budget", "benchmark/report.py", "defaults[\"total_timesteps\"] = str(MPE_BUDGET)",
           "pass", ("tests/test_benchmark.py::test_table1_takes_mpe_runs_at_1m_and_sets_2m_runs_apart",)),
    Mutant("report-mpe-normalised-to-zero", "benchmark/report.py", "return reference[RANDOM], reference[HEURISTIC]",
           "return reference[RANDOM], 0.0",
           ("tests/test_benchmark.py::test_mpe_family_is_normalised_by_the_heuristic_team_and_its_ordering_is_ours",)),
    # the multiprocess scripts: one agent's line cut into another's on the shared output
    Mutant("multiprocess-line-written-in-two", "dvdn_multiprocess.py", "reconfigure(line_buffering=True, write_through=False)",
           "reconfigure(line_buffering=True)",
           ("tests/test_multiprocess.py::test_each_write_to_the_shared_output_is_whole_lines[dvdn_multiprocess.py]",)),
]  # fmt: skip


@dataclass
class Args:
    only: Optional[tuple[str, ...]] = None
    """names of the mutants to run (default: all)"""
    list: bool = False
    """print the mutants and their tests, run nothing"""
    baseline: bool = True
    """first run every guarding test on the unbroken copy"""
    timeout: int = 1800
    """seconds one mutant's tests may take"""


def working_tree_copy(root: Path, dest: Path):
    """Copies the files git tracks or would track (the working tree as it is, not HEAD) into dest."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, names):
        if (root / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dest / name)


def run_tests(tree: Path, tests, timeout: int):
    """Runs the tests in tree: (number failed or in error, number run, first failure as 'test: message'), or None on a
    time-out."""
    report = tree / ".mutant-junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", f"--junitxml={report}", *tests]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    report.unlink(missing_ok=True)
    try:
        subprocess.run(cmd, cwd=tree, capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None
    if not report.exists():  # pytest stopped before running anything, e.g. a node id that names no test
        return 0, 0, ""
    suite = next(ET.parse(report).getroot().iter("testsuite"))  # the root, or the root's one child
    failures = [f"{case.get('name')}: {(bad.get('message') or bad.tag).splitlines()[0]}"
                for case in suite.iter("testcase") for bad in case if bad.tag in ("failure", "error")]  # fmt: skip
    return len(failures), int(suite.get("tests")) - int(suite.get("skipped")), failures[0] if failures else ""


def apply(tree: Path, mutant: Mutant):
    """Writes the broken file; returns the original text, or raises ValueError if the line is not there exactly once."""
    path = tree / mutant.file
    text = path.read_text()
    if text.count(mutant.line) != 1:
        raise ValueError(f"mutant {mutant.name}: {mutant.file} holds its line {text.count(mutant.line)} times, not once")
    path.write_text(text.replace(mutant.line, mutant.broken))
    return text


def survey(tree: Path, mutants, timeout: int, baseline: bool = True):
    """[(mutant, verdict, detail, seconds)]; verdict: caught, survived, timed out, not applied (its line is gone) or not
    run (a node id names no test)."""
    rows = []
    if baseline:
        tests = sorted({t for m in mutants for t in m.tests})
        result = run_tests(tree, tests, timeout * 2)
        if result is None:
            raise SystemExit(f"error: the guarding tests took over {timeout * 2} s unbroken")
        if result[0] or result[1] != len(tests):
            raise SystemExit(f"error: the guarding tests do not all pass unbroken: {result[0]} failed, {result[1]} of "
                             f"{len(tests)} ran (pytest runs none when a node id names no test)")
    for mutant in mutants:
        start = time.time()
        try:
            original = apply(tree, mutant)
        except ValueError as error:
            rows.append((mutant, "not applied", str(error), 0.0))
            continue
        try:
            result = run_tests(tree, mutant.tests, timeout)
        finally:
            (tree / mutant.file).write_text(original)
        if result is None:
            verdict, detail = "timed out", f"over {timeout} s"
        elif result[1] < len(mutant.tests):
            verdict, detail = "not run", f"{result[1]} of its {len(mutant.tests)} tests ran"
        else:
            verdict = "caught" if result[0] else "survived"
            detail = f"{result[0]} of {result[1]} tests failed" + (f"; {result[2][:120]}" if result[0] else "")
        rows.append((mutant, verdict, detail, time.time() - start))
        print(f"{mutant.name}: {verdict} ({detail})", flush=True)
    return rows


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.mutants")
    names = {m.name for m in MUTANTS}
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        raise SystemExit(f"error: unknown mutant {', '.join(unknown)}; choose from {', '.join(sorted(names))}")
    if args.timeout <= 0:
        raise SystemExit(f"error: --timeout must be positive, got {args.timeout}")
    mutants = [m for m in MUTANTS if args.only is None or m.name in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.name} ({m.file}): {m.line.strip()!r} -> {m.broken.strip()!r}\n    " + "\n    ".join(m.tests))
        raise SystemExit(0)
    with tempfile.TemporaryDirectory(prefix="mutants-") as scratch:
        working_tree_copy(ROOT, Path(scratch))
        rows = survey(Path(scratch), mutants, args.timeout, args.baseline)
    print("\n| mutant | file | verdict | tests failed, the first failure | seconds |\n|---|---|---|---|---|")
    for m, verdict, detail, seconds in rows:
        print(f"| `{m.name}` | `{m.file}` | {verdict} | {detail.replace('|', '/')} | {seconds:.0f} |")
    verdicts = [verdict for _, verdict, _, _ in rows]
    sys.exit(2 if {"not applied", "not run"} & set(verdicts) else 1 if any(v != "caught" for v in verdicts) else 0)
