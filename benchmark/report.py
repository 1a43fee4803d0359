"""Results table (the paper's Table 1 layout) and learning curves from the result records (and local run folders).

    python -m benchmark.report --results results --out docs/results --readme README.md

Reads every record under `--results` (benchmark/records.py) and every run folder
`{env}__{exp_name}__{seed}__{unix_time}` under `--runs`. Runs are seeds of one experiment only when their fingerprints
match. Table 1's cells use the runs made with the scripts' current defaults (the fingerprint of `Args()`, with the env)
at the paper's budget; runs under any other settings are listed apart, with the flags that differ from the defaults. The
MPE table is laid out as Table 1 would have it, but the paper reports no MPE: its cells have no paper value, its rows
show random play and the heuristic team instead, and its ordering is our inference. For each (task,
algorithm): average the return over seeds at each evaluation step, take the maximum over steps, and give a 95% bootstrap
CI over seeds at that step (the paper's metric, docs/algorithms.md, "Reported metric"). Only the evaluation steps that
every seed logged are used, so every point averages the same seeds. The report also lists every run in Table 1's cells
with its own best, its training time and the commits its record names. Beside the paper's metric it gives each seed's
mean over the last 10% of its evaluations, the IQM of normalised scores per family of tasks, performance profiles, and
the verdicts of one rule (benchmark/fewseeds.py). With `--readme`, Table 1's tables, the verdicts over whole families of
tasks, Table 1's orderings over them and the performance profiles also replace the README's text between the lines
`<!-- report.py: begin -->` and `<!-- report.py: end -->`, so the front page never copies a number or a verdict by
hand; the rest stays in report.md.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import tyro

from benchmark.fewseeds import VERDICT_RULE, compare, iqm, last_tenth, profiles
from benchmark.records import OUTSIDE_FINGERPRINT, fingerprint, load_script, make_record, read_records, run_dirs

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    results: Optional[str] = "results"
    """folder of result records (None: none)"""
    runs: tuple[str, ...] = ()
    """folders searched recursively for run folders with TensorBoard event files"""
    out: str = "sweeps/report"
    """folder for report.md and one learning-curve PNG per task"""
    n_resamples: int = 20_000
    """bootstrap resamples of the seeds"""
    seed: int = 0
    """seed of the bootstrap RNG, so the report is reproducible"""
    readme: Optional[str] = None
    """markdown file whose block between README_BEGIN and README_END gets the Table-1 tables and the family verdicts"""
    reps: int = 2000
    """bootstrap resamples for rliable's intervals (IQM, probability of improvement, performance profiles)"""


COLUMNS = {"iql": "IQL", "iql_ps": "IQL (PS)", "dvdn": "DVDN", "dvdn_gt": "DVDN (GT)", "vdn": "VDN", "vdn_ps": "VDN (PS)"}
TABLES = [  # (title, {env preset: task name}, exp_names in the paper's columns)
    ("LBF (homogeneous)", {"lbf-easy": "Easy", "lbf-medium": "Medium", "lbf-hard": "Hard"}, ["iql", "dvdn_gt", "vdn_ps"]),
    # Table 1's MARBLER runs use the exact barrier QP (docs/marbler.md): the -exact presets, beside MARBLER's numbers
    ("MARBLER (heterogeneous)", {"marbler-arctic-exact": "Arctic", "marbler-material-exact": "Material",
                                 "marbler-pcp-exact": "PCP", "marbler-warehouse-exact": "Warehouse"}, ["iql", "dvdn", "vdn"]),
    # not in the paper: Table 1's layout, our inference, no paper values (docs/mpe.md)
    ("MPE (homogeneous; not in the paper)", {"mpe-spread": "Spread", "mpe-tag": "Tag", "mpe-adversary": "Adversary"},
     ["iql", "dvdn_gt", "vdn_ps"]),
]  # fmt: skip
FAMILIES = [  # (family, {env preset: task name}, (A, B) pairs to compare, Table 1's orderings low < mid < high)
    ("LBF", TABLES[0][1], [("dvdn_gt", "vdn_ps"), ("dvdn_gt", "iql"), ("vdn_ps", "iql"), ("dvdn_gt", "iql_ps"),
                           ("vdn_ps", "iql_ps"), ("iql_ps", "iql")], [("iql", "dvdn_gt", "vdn_ps"), ("iql_ps", "dvdn_gt", "vdn_ps")]),
    ("MARBLER", TABLES[1][1], [("dvdn", "vdn"), ("dvdn", "iql"), ("vdn", "iql")], [("iql", "dvdn", "vdn")]),
    # the ordering is LBF's, our inference: the paper reports no MPE (ordering_lines says so)
    ("MPE", TABLES[2][1], [("dvdn_gt", "vdn_ps"), ("dvdn_gt", "iql"), ("vdn_ps", "iql")], [("iql", "dvdn_gt", "vdn_ps")]),
]  # fmt: skip
README_BEGIN, README_END = "<!-- report.py: begin -->", "<!-- report.py: end -->"
MARBLER_BUDGET = 5_000_000  # env steps of a MARBLER run in Table 1; LBF's 2M is the scripts' default
MPE_BUDGET = 1_000_000  # env steps of an MPE run in our MPE table (not in the paper; docs/mpe.md's runs)
# Lines drawn on the curves, (label, team return). Uniform-random returns: LBF benchmark/studies/random_returns.py
# (2000 episodes); MARBLER benchmark/studies/marbler_stats.py (200 episodes; cvxopt and DAQP); MPE
# benchmark/studies/mpe_heuristics.py, which also gives the heuristic teams; Warehouse's scripted team
# benchmark/studies/marbler_heuristics.py (100 episodes, DAQP).
# Commands and tables in docs/lbf.md, docs/marbler.md and docs/mpe.md.
RANDOM, HEURISTIC = "uniform random", "heuristic team"
REFERENCES = {
    "lbf-easy": [(RANDOM, 0.150)], "lbf-medium": [(RANDOM, 0.150)], "lbf-hard": [(RANDOM, 0.116)],
    "marbler-arctic": [(RANDOM, -144.90)], "marbler-material": [(RANDOM, -29.03)],
    "marbler-pcp": [(RANDOM, -18.98)], "marbler-warehouse": [(RANDOM, -14.04)],
    "marbler-arctic-exact": [(RANDOM, -144.24)], "marbler-material-exact": [(RANDOM, -29.34)],
    "marbler-pcp-exact": [(RANDOM, -18.81)], "marbler-warehouse-exact": [(RANDOM, -15.26), ("scripted team", 24.17)],
    "mpe-spread": [(RANDOM, -80.5), (HEURISTIC, -24.8)], "mpe-tag": [(RANDOM, 2.7), (HEURISTIC, 7.4)],
    "mpe-adversary": [(RANDOM, -9.2), (HEURISTIC, 20.6)],
}  # fmt: skip
PAPER = {  # Table 1 of the extended abstract: mean, CI low offset, CI high offset (10 seeds)
    ("marbler-arctic", "iql"): (-43.51, -1.64, 1.65), ("marbler-arctic", "dvdn"): (-37.56, -1.01, 0.84),
    ("marbler-arctic", "vdn"): (-30.93, -0.70, 0.76), ("marbler-material", "iql"): (12.81, -0.49, 0.51),
    ("marbler-material", "dvdn"): (18.07, -1.14, 1.30), ("marbler-material", "vdn"): (21.82, -0.36, 0.36),
    ("marbler-pcp", "iql"): (130.72, -0.81, 0.76), ("marbler-pcp", "dvdn"): (133.02, -0.67, 0.78),
    ("marbler-pcp", "vdn"): (125.10, -2.57, 3.09), ("marbler-warehouse", "iql"): (21.99, -0.42, 0.38),
    ("marbler-warehouse", "dvdn"): (28.74, -0.45, 0.45), ("marbler-warehouse", "vdn"): (23.65, -0.90, 0.93),
    ("lbf-easy", "iql"): (0.81, -0.02, 0.02), ("lbf-easy", "dvdn_gt"): (0.89, -0.02, 0.02),
    ("lbf-easy", "vdn_ps"): (0.94, -0.01, 0.01), ("lbf-medium", "iql"): (0.61, -0.02, 0.02),
    ("lbf-medium", "dvdn_gt"): (0.72, -0.01, 0.02), ("lbf-medium", "vdn_ps"): (0.79, -0.02, 0.02),
    ("lbf-hard", "iql"): (0.43, -0.01, 0.02), ("lbf-hard", "dvdn_gt"): (0.52, -0.01, 0.02),
    ("lbf-hard", "vdn_ps"): (0.56, -0.02, 0.02),
}  # fmt: skip


def load_groups(results, folders):
    """The curves {(env, exp_name, fingerprint): {seed: (steps, values)}} and the records behind them
    {(env, exp_name, fingerprint): {seed: record}}, from records and run folders."""
    records = read_records(results) if results else []
    records += [record for record in (make_record(path, "local") for path in run_dirs(folders)) if record]
    groups, by_seed = {}, {}
    for record in records:
        key = (record["env"], record["exp_name"], record["fingerprint"])
        steps, values = zip(*record["eval"]) if record["eval"] else ((), ())
        groups.setdefault(key, {})[record["seed"]] = (list(steps), list(values))
        by_seed.setdefault(key, {})[record["seed"]] = record
    return groups, by_seed


def default_flags(exp_name, env):
    """The flags of `python {exp_name}.py --env {env}` with today's defaults; None when there is no such script."""
    path = ROOT / f"{exp_name}.py"
    if not path.exists():
        return None
    return {key: str(value) for key, value in vars(load_script(str(path)).Args(env=env)).items()}


def table1_flags(exp_name, env):
    """The flags of a Table-1 run: today's defaults at the paper's budget (docs/algorithms.md, "Defaults": LBF 2M env steps,
    the scripts' default; MARBLER 5M; MPE, which the paper does not report, 1M, as docs/mpe.md's runs). None when there
    is no such script."""
    defaults = default_flags(exp_name, env)
    if defaults is not None and env.startswith("marbler-"):
        defaults["total_timesteps"] = str(MARBLER_BUDGET)
    if defaults is not None and env.startswith("mpe-"):
        defaults["total_timesteps"] = str(MPE_BUDGET)
    return defaults


def table1_fingerprint(exp_name, env):
    """The fingerprint of a Table-1 run of `exp_name` on `env`; None when there is no such script."""
    defaults = table1_flags(exp_name, env)
    return None if defaults is None else fingerprint({**defaults, "env": env})


def split_by_defaults(groups):
    """Table 1's groups {(env, exp_name): curves}, made with today's defaults at the paper's budget; the rest
    {(env, exp_name, fp): curves}."""
    main, other = {}, {}
    for (env, exp_name, fp), curves in groups.items():
        if fp == table1_fingerprint(exp_name, env):
            main[env, exp_name] = curves
        else:
            other[env, exp_name, fp] = curves
    return main, other


def differing_flags(exp_name, env, flags):
    defaults = table1_flags(exp_name, env) or {}
    changed = [f"--{k.replace('_', '-')} {v}" for k, v in sorted(flags.items())
               if k not in OUTSIDE_FINGERPRINT and defaults.get(k) != v]  # fmt: skip
    return ", ".join(changed) or "(same flags; older code or preset)"


def common_steps(curves):
    """Steps that every seed logged, and the (n_seeds, n_steps) matrix of values there; seeds sorted."""
    steps = sorted(set.intersection(*(set(s) for s, _ in curves.values())))
    rows = [dict(zip(*curves[seed])) for seed in sorted(curves)]
    return np.array(steps), np.array([[row[s] for s in steps] for row in rows]).reshape(len(rows), len(steps))


def bootstrap_ci(values, n_resamples=20_000, seed=0):
    """95% percentile bootstrap CI of the mean: resample the seeds with replacement, take 2.5/97.5 percentiles."""
    values = np.asarray(values, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(values), size=(n_resamples, len(values)))
    lo, hi = np.percentile(values[idx].mean(axis=1), [2.5, 97.5])
    return float(lo), float(hi)


def best_point(curves, n_resamples=20_000, seed=0):
    """Max over eval steps of the seed-mean return, with its bootstrap CI; None if the seeds share no step."""
    steps, values = common_steps(curves)
    if len(steps) == 0:
        return None
    i = int(np.argmax(values.mean(axis=0)))  # the first step wins a tie
    lo, hi = bootstrap_ci(values[:, i], n_resamples, seed)
    return {"step": int(steps[i]), "mean": float(values[:, i].mean()), "lo": lo, "hi": hi, "n_seeds": len(curves)}


def paper(env, exp_name):
    """Table 1's (mean, CI low offset, CI high offset) for a cell, or None; an -exact preset is its MARBLER task."""
    return PAPER.get((env.removesuffix("-exact"), exp_name))


def in_paper(env):
    """Whether Table 1 reports the task at all (MPE's tasks: no)."""
    return any(task == env.removesuffix("-exact") for task, _ in PAPER)


def paper_reference(env, exp_name):
    """The Table-1 number a cell is compared with, and its label. An IQL (PS) cell on LBF gets the paper's IQL: the paper
    does not say whether its homogeneous IQL shared parameters (EPyMARL's `iql` does)."""
    if exp_name == "iql_ps" and env.startswith("lbf-"):
        return paper(env, "iql"), "paper's IQL"
    return paper(env, exp_name), "paper"


def paper_interval(env, exp_name):
    """Table 1's cell as {"mean", "lo", "hi"}, or None; the bounds are rounded to the paper's printed precision's scale
    so that CIs printed as touching (0.52 + 0.02 and 0.56 - 0.02) touch in floating point too."""
    cell = paper(env, exp_name)
    return None if cell is None else {"mean": cell[0], "lo": round(cell[0] + cell[1], 6), "hi": round(cell[0] + cell[2], 6)}


def overlap(a, b):
    """Whether two 95% CIs, each a dict with "lo" and "hi", share a point."""
    return a["lo"] <= b["hi"] and b["lo"] <= a["hi"]


def relation(a, b):
    """The paper's reading of its own cells: 'above', 'level' (its 10-seed CIs overlap) or 'below', a against b."""
    return "level" if overlap(a, b) else "above" if a["mean"] > b["mean"] else "below"


def normaliser(env):
    """(random play's return, the best return Table 1 reports on the task): the 0 and 1 of a normalised score. A task
    Table 1 does not report (MPE's) has the heuristic team's return as its 1."""
    reference = dict(REFERENCES[env])
    if not in_paper(env):
        return reference[RANDOM], reference[HEURISTIC]
    return reference[RANDOM], max(mean for (task, _), (mean, _, _) in PAPER.items() if task == env.removesuffix("-exact"))


def normalise(env, value):
    low, high = normaliser(env)
    return (value - low) / (high - low)


def seed_scores(curves):
    """{seed: the seed's mean over the last 10% of its evaluations}, each seed's own evaluations in step order."""
    return {seed: last_tenth([v for _, v in sorted(zip(*curve))]) for seed, curve in sorted(curves.items()) if curve[0]}


def score_matrix(runs, envs, exp_name, normalised=True):
    """(seeds, tasks) matrix of an algorithm's scores on `envs` over the seeds it ran on every one of them, and the
    seeds; None when it has no such seed."""
    scores = [seed_scores(runs[env, exp_name]) for env in envs]
    seeds = sorted(set.intersection(*(set(s) for s in scores)))
    if not seeds:
        return None
    values = [[normalise(env, s[seed]) if normalised else s[seed] for env, s in zip(envs, scores)] for seed in seeds]
    return np.array(values), seeds


def budget(exp_name, env):
    steps = int(table1_flags(exp_name, env)["total_timesteps"])
    return f"{steps / 1e6:g}M"


def family_envs(runs, tasks, exp_names):
    """The family's tasks on which every one of `exp_names` has Table-1 runs."""
    return [env for env in tasks if all((env, e) in runs for e in exp_names)]


def verdicts(runs, families, reps, seed):
    """Every comparison the report makes, as rows {"a", "b", "scope", "envs", "n_a", "n_b", "budget", "paper",
    "agreement", **compare()}: per family over the tasks both algorithms ran, then per task."""
    rows = []
    for family, tasks, pairs, _ in families:
        for a, b in pairs:
            envs = family_envs(runs, tasks, [a, b])
            scopes = ([(family, envs)] if len(envs) > 1 else []) + [(tasks[env], [env]) for env in envs]
            for scope, scope_envs in scopes:
                x, y = score_matrix(runs, scope_envs, a), score_matrix(runs, scope_envs, b)
                if x is None or y is None:
                    continue
                row = {"a": a, "b": b, "scope": scope, "envs": scope_envs, "n_a": len(x[1]), "n_b": len(y[1]),
                       "budget": budget(a, scope_envs[0]), **compare(x[0], y[0], reps, seed)}  # fmt: skip
                papers = [relation(paper_interval_of(env, a), paper_interval_of(env, b)) for env in scope_envs
                          if paper_reference(env, a)[0] and paper_reference(env, b)[0]
                          and paper_reference(env, a)[0] != paper_reference(env, b)[0]]  # one paper column: no relation
                row["paper"] = ", ".join(papers) if papers else "n/a" if any(map(in_paper, scope_envs)) else "no paper value"
                row["agreement"] = agreement(row["verdict"], papers)
                rows.append(row)
    return rows


def paper_interval_of(env, exp_name):
    """paper_interval of the Table-1 cell a column is compared with (an LBF IQL (PS) column: the paper's IQL)."""
    cell = paper_reference(env, exp_name)[0]
    return {"mean": cell[0], "lo": round(cell[0] + cell[1], 6), "hi": round(cell[0] + cell[2], 6)}


def agreement(verdict, papers):
    """Ours against the paper's reading of its Table 1, task by task: only a verdict of above or below can agree."""
    if verdict not in ("above", "below") or not papers:
        return "cannot say"
    same = sum(p == verdict for p in papers)
    return "as the paper" if same == len(papers) else "against the paper" if same == 0 else f"as the paper on {same} of {len(papers)}"


def verdict_sentence(row):
    """The canonical sentence of a verdict, as the README's prose quotes it."""
    return f"{COLUMNS[row['a']]} against {COLUMNS[row['b']]} on {row['scope']}: {row['verdict']}"


def verdict_table(rows):
    lines = ["### Verdicts", "", f"Rule: {VERDICT_RULE}", "",
             "| A against B | over | seeds A; B | budget | P(A > B) (95% interval) | p | verdict | paper's Table 1, task by task | "
             "ours against the paper |",
             "|---" * 9 + "|"]  # fmt: skip
    for row in rows:
        interval = "" if np.isnan(row["lo"]) else f" ({row['lo']:.2f} to {row['hi']:.2f})"
        over = row["scope"] + (f" ({len(row['envs'])} tasks)" if len(row["envs"]) > 1 else "")
        lines.append(f"| {COLUMNS[row['a']]} against {COLUMNS[row['b']]} | {over} | {row['n_a']}; {row['n_b']} | "
                     f"{row['budget']} | {row['poi']:.2f}{interval} | {row['p']:.3g} | **{row['verdict']}** | "
                     f"{row['paper']} | {row['agreement']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def family_verdict_table(rows, families, report="report.md"):
    """The front page's short form of the verdict table: one row per comparison over a whole family of tasks; `report`
    is the link to the full report, whose verdict table has every comparison per task too."""
    names = {family for family, *_ in families}
    lines = ["### Verdicts over each family of tasks", "",
             f"The rule, and every comparison per task: [the full report]({report}#verdicts).", "",
             "| A against B | over | seeds A; B | budget | P(A > B) (95% interval) | verdict | "
             "paper's Table 1, task by task |",
             "|---" * 7 + "|"]  # fmt: skip
    for row in rows:
        if row["scope"] in names:
            interval = "" if np.isnan(row["lo"]) else f" ({row['lo']:.2f} to {row['hi']:.2f})"
            lines.append(f"| {COLUMNS[row['a']]} against {COLUMNS[row['b']]} | {row['scope']} ({len(row['envs'])} tasks) | "
                         f"{row['n_a']}; {row['n_b']} | {row['budget']} | {row['poi']:.2f}{interval} | **{row['verdict']}** | "
                         f"{row['paper']} |")  # fmt: skip
    return "\n".join(lines) + "\n" if len(lines) > 6 else ""


def ordering_lines(rows, families, per_task=True):
    """Table 1's ordering low < mid < high per family (and per task unless not `per_task`), from the verdicts of mid
    against low and mid against high: holds when both say so, fails when either says the opposite, otherwise not shown."""
    find = {(r["a"], r["b"], r["scope"]): r["verdict"] for r in rows}
    lines = ["### Table 1's ordering, from the verdicts", ""]
    for family, tasks, _, orderings in families:
        ours = "" if any(map(in_paper, tasks)) else f"; the ordering is our inference: the paper reports no {family}"
        for low, mid, high in orderings:
            for scope in [family, *tasks.values()] if per_task else [family]:
                if (mid, low, scope) not in find or (mid, high, scope) not in find:
                    continue
                above_low, against_high = find[mid, low, scope], find[mid, high, scope]
                if above_low == "above" and against_high == "below":
                    result = "holds"
                elif above_low == "below" or against_high == "above":
                    result = "fails"
                else:
                    result = "not shown"
                lines.append(f"- {COLUMNS[low]} < {COLUMNS[mid]} < {COLUMNS[high]} on {scope}: **{result}** "
                             f"({COLUMNS[mid]} against {COLUMNS[low]}: {above_low}; against {COLUMNS[high]}: {against_high}"
                             f"{ours})")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def aggregate_table(runs, families, reps, seed):
    """IQM of normalised scores per family and algorithm, with rliable's stratified bootstrap interval."""
    lines = ["### Aggregates per family: IQM of normalised scores", ""]
    lines += ["A run's score is its mean over the last 10% of its evaluations, normalised per task to 0 for uniform random "
              "play and 1 for the best return Table 1 reports on that task (the paper's best algorithm there; on MPE, "
              "which Table 1 does not report, the heuristic team's return). "
              "IQM: the mean of the middle 50% of all (task, seed) scores of the family; interval: 95% stratified "
              "bootstrap (seeds resampled within each task).", ""]  # fmt: skip
    lines += ["| family | algorithm | tasks | seeds per task | budget | IQM (95% interval) |", "|---" * 6 + "|"]
    for family, tasks, pairs, _ in families:
        exp_names = list(dict.fromkeys(e for pair in pairs for e in pair))
        envs = family_envs(runs, tasks, [e for e in exp_names if any((env, e) in runs for env in tasks)])
        if not envs:
            continue
        matrices = {e: score_matrix(runs, envs, e) for e in exp_names if all((env, e) in runs for env in envs)}
        estimates = iqm({e: m[0] for e, m in matrices.items() if m}, reps, seed)
        for exp_name, (point, lo, hi) in estimates.items():
            lines.append(f"| {family} | {COLUMNS[exp_name]} | {', '.join(tasks[env] for env in envs)} | "
                         f"{len(matrices[exp_name][1])} | {budget(exp_name, envs[0])} | {point:.2f} ({lo:.2f} to {hi:.2f}) |")
    return "\n".join(lines) + "\n"


def metric_table(runs, tables):
    """Per cell: the paper's metric (max over evaluations of the seed mean) beside each seed's mean over the last 10% of
    its evaluations, averaged over seeds, and the seeds' own values where there are 3 or fewer."""
    lines = ["### Per cell: the paper's metric beside the mean over the last 10% of training", "",
             "| task | algorithm | n | budget | max over evaluations of the seed mean | last 10%: seed mean | last 10%: per seed |",
             "|---" * 7 + "|"]  # fmt: skip
    for _, tasks, exp_names in tables:
        for env, task in tasks.items():
            for exp_name in exp_names:
                if (env, exp_name) not in runs:
                    continue
                steps, values = common_steps(runs[env, exp_name])
                scores = seed_scores(runs[env, exp_name])
                best = f"{values.mean(axis=0).max():.2f}" if len(steps) else "no common step"
                per_seed = ", ".join(f"{v:.2f}" for v in scores.values()) if len(scores) <= 3 else "(n > 3: in report.md)"
                lines.append(f"| {task} | {COLUMNS.get(exp_name, exp_name)} | {len(scores)} | {budget(exp_name, env)} | "
                             f"{best} | {np.mean(list(scores.values())):.2f} | {per_seed} |")
    return "\n".join(lines) + "\n"


def gap_table(runs, rows, title, tasks, low, mid, high):
    """Share of the low-to-high gap that mid closes, (mid - low) / (high - low), on both metrics and in the paper; point
    estimates only (whether mid lies between the two at all is the ordering's verdict). Ours is given only where the
    family's verdict puts high above low: a share of a gap not shown to exist is no number."""
    gap = next((r["verdict"] for r in rows if (r["a"], r["b"], r["scope"]) == (high, low, title)), "not compared")
    lines = [f"### {title}: gap from {COLUMNS[low]} to {COLUMNS[high]} closed by {COLUMNS[mid]}", "",
             "| task | on the paper's metric | on the last 10% | paper's |", "|---" * 4 + "|"]  # fmt: skip
    for env, task in tasks.items():
        if not all((env, e) in runs for e in (low, mid, high)):
            continue
        best = [common_steps(runs[env, e])[1].mean(axis=0).max() for e in (low, mid, high)]
        last = [np.mean(list(seed_scores(runs[env, e]).values())) for e in (low, mid, high)]
        refs = [paper_reference(env, e)[0] for e in (low, mid, high)]
        cells = [f"{(m - lo) / (hi - lo):.2f}" for lo, m, hi in (best, last)] if gap == "above" else \
            [f"undefined: {COLUMNS[high]} against {COLUMNS[low]} on {title} is {gap}"] * 2
        cells.append(f"{(refs[1][0] - refs[0][0]) / (refs[2][0] - refs[0][0]):.2f}" if all(refs) else
                     "n/a" if in_paper(env) else "no paper value")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" if len(lines) > 4 else ""


def plot_profiles(runs, families, path, reps, seed):
    """Performance profiles, one panel per family: the share of runs whose normalised score exceeds tau, with bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for family, tasks, pairs, _ in families:
        exp_names = list(dict.fromkeys(e for pair in pairs for e in pair))
        present = [e for e in exp_names if any((env, e) in runs for env in tasks)]
        envs = family_envs(runs, tasks, present)
        if envs:
            matrices = {e: score_matrix(runs, envs, e) for e in present}
            panels.append((family, envs, {e: m[0] for e, m in matrices.items() if m}))
    panels = [panel for panel in panels if panel[2]]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (family, envs, matrices) in zip(axes[0], panels):
        taus = np.linspace(min(0.0, min(m.min() for m in matrices.values())), max(1.2, max(m.max() for m in matrices.values())), 101)
        points, bands = profiles(matrices, taus, reps, seed)
        for exp_name in matrices:
            color = f"C{list(COLUMNS).index(exp_name)}"
            ax.plot(taus, points[exp_name], color=color, label=f"{COLUMNS[exp_name]} (n={len(matrices[exp_name])} per task)")
            ax.fill_between(taus, bands[exp_name][0], bands[exp_name][1], color=color, alpha=0.15)
        top = "the paper's best" if any(map(in_paper, envs)) else "the heuristic team"
        ax.set(title=f"{family}: {', '.join(envs)}", xlabel=f"normalised score tau (0: random play, 1: {top})",
               ylabel="fraction of runs with score > tau", ylim=(0, 1.02))
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def format_interval(mean, lo, hi, has_ci):
    """'0.47 (0.46 to 0.51)', or '0.47 (no CI)' where the bootstrap had a one-seed input."""
    return f"{mean:.2f} " + (f"({lo:.2f} to {hi:.2f})" if has_ci else "(no CI)")


def format_best(best):
    """A best_point as 'mean (lo - mean, hi - mean)'; one seed has no interval: 'mean (no CI)'."""
    return f"{best['mean']:.2f} (no CI)" if best["n_seeds"] == 1 else format_ci(best["mean"], best["lo"], best["hi"])


def format_ci(mean, lo, hi):
    """'0.87 (-0.02, 0.02)': the CI as offsets from the mean, like the paper."""
    lo_off, hi_off = round(lo - mean, 2) + 0.0, round(hi - mean, 2) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{mean:.2f} ({lo_off:.2f}, {hi_off:.2f})"


def make_table(title, tasks, exp_names, results):
    """Markdown table, rows = tasks, columns = algorithms; each cell is ours (n seeds) and the paper's number. A task
    Table 1 does not report (MPE's) says so in each cell, and its reference returns (random play, the heuristic team)
    follow it as rows, the value under every column."""
    lines = [f"### {title}", "", "| task | " + " | ".join(COLUMNS.get(e, e) for e in exp_names) + " |",
             "|---" * (len(exp_names) + 1) + "|"]  # fmt: skip
    for env, task in tasks.items():
        cells = []
        for exp_name in exp_names:
            best = results.get((env, exp_name), "not run")
            cell = best if isinstance(best, str) else f"{format_best(best)} n={best['n_seeds']}"
            reference, label = paper_reference(env, exp_name)
            if reference:
                mean, lo_off, hi_off = reference
                cell += f"; {label} {format_ci(mean, mean + lo_off, mean + hi_off)}"
            elif not in_paper(env):
                cell += "; no paper value"
            cells.append(cell)
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
        if not in_paper(env):
            lines += [f"| {task}: {label} (reference) | " + " | ".join([f"{value:.2f}"] * len(exp_names)) + " |"
                      for label, value in REFERENCES.get(env, [])]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_readme_block(path, sections):
    """Replace the text between README_BEGIN and README_END in `path` by `sections` (markdown blocks)."""
    text = Path(path).read_text()
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1 or text.index(README_BEGIN) > text.index(README_END):
        raise SystemExit(f"error: {path} needs one line {README_BEGIN} and, after it, one line {README_END}")
    head, rest = text.split(README_BEGIN)
    tail = rest.split(README_END)[1]
    block = f"{README_BEGIN}\n<!-- written by benchmark/report.py --readme; edit the records, not this block -->\n\n"
    Path(path).write_text(head + block + "\n".join(sections) + "\n" + README_END + tail)


def paper_lines(env, exp_names):
    """The paper's Table-1 levels drawn on a task's curves, [(label, value, exp_name whose colour it takes)]: one per
    algorithm with a Table-1 cell, and the paper's IQL once, even when both readings of it (IQL, IQL (PS)) are plotted."""
    lines = []
    for exp_name in exp_names:
        cell, label = paper_reference(env, exp_name)
        if cell is None or (label == "paper's IQL" and "iql" in exp_names):
            continue  # no Table-1 cell, or the paper's IQL is drawn in IQL's colour
        name = COLUMNS["iql"] if label == "paper's IQL" else COLUMNS[exp_name]
        lines.append((f"paper's {name}: {cell[0]:.2f}", cell[0], exp_name))
    return lines


def plot_task(env, runs, path, n_resamples, seed):
    """Seed mean and 95% bootstrap band vs env steps, one line per algorithm; dotted, in its colour, the paper's level
    for that algorithm (Table 1 reports the best point of the seed-mean curve, as our tables do)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    exp_names, colours = sorted(e for t, e in runs if t == env), {}
    for exp_name in exp_names:
        steps, values = common_steps(runs[env, exp_name])
        band = np.array([bootstrap_ci(v, n_resamples, seed) for v in values.T]).reshape(-1, 2)
        color = f"C{list(COLUMNS).index(exp_name)}" if exp_name in COLUMNS else None  # one colour per algorithm, every plot
        label = f"{COLUMNS.get(exp_name, exp_name)} (n={len(values)})"
        line = ax.plot(steps, values.mean(axis=0), color=color, label=label)[0]
        colours[exp_name] = line.get_color()
        ax.fill_between(steps, band[:, 0], band[:, 1], color=colours[exp_name], alpha=0.2)
    for label, value, exp_name in paper_lines(env, exp_names):
        ax.axhline(value, color=colours[exp_name], linestyle=":", linewidth=1.2, label=label)
    for (label, value), style in zip(REFERENCES.get(env, []), ["--", "-."]):
        ax.axhline(value, color="gray", linestyle=style, label=label)
    ax.set(title=env, xlabel="environment steps", ylabel="greedy evaluation return")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def short_commit(commit):
    """'6d413dd' for a full git hash, a '-dirty' suffix kept; other names ('local') as they are."""
    sha, dirty, _ = commit.partition("-dirty")
    return (sha[:7] if re.fullmatch("[0-9a-f]{40}", sha) else sha) + ("-dirty" if dirty else "")


def runs_table(records):
    """One row per seed of Table 1's cells (the records with a Table-1 fingerprint): that seed's own best and last
    evaluation, and what its record keeps of how it was made (training time and starts, the commits its start and each
    resume began from, the commit it ended at). Older records lack some of these: 'not recorded'."""
    lines = ["### The runs in Table 1's cells", "",
             "| task | algorithm | seed | best (at step) | last (at step) | training time, starts | "
             "commits: started by; ended at |",
             "|---" * 7 + "|"]  # fmt: skip
    order = list(COLUMNS)
    table1 = [(env, exp_name, fp) for env, exp_name, fp in records if fp == table1_fingerprint(exp_name, env)]
    for env, exp_name, fp in sorted(table1, key=lambda key: (key[0], order.index(key[1]) if key[1] in order else len(order))):
        for seed, record in sorted(records[env, exp_name, fp].items()):
            curve = sorted(map(tuple, record["eval"]))
            if not curve:
                continue
            best, last = max(curve, key=lambda point: point[1]), curve[-1]  # max: the first step wins a tie
            made = f"{record['train_seconds'] / 3600:.1f} h, {record['starts']}" if "train_seconds" in record else None
            started = ", ".join(map(short_commit, record.get("started_by", [])))
            ended = short_commit(record.get("commit", ""))
            lines.append(f"| {env} | {COLUMNS.get(exp_name, exp_name)} | {seed} | {best[1]:.2f} ({best[0]}) | {last[1]:.2f} "
                         f"({last[0]}) | {made or 'not recorded'} | {started or 'not recorded'}; {ended or 'not recorded'} |")
    return "\n".join(lines) + "\n"


def other_settings_table(other, flags, n_resamples, seed):
    lines = ["### Runs under other settings (not in the tables above)", "",
             "| task | algorithm | seeds | best (at step) | at the last step | flags that differ from Table 1's settings |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for (env, exp_name, fp), curves in sorted(other.items()):
        best = best_point(curves, n_resamples, seed)
        steps, values = common_steps(curves)
        if best is None:
            continue
        spread = f" ± {values[:, -1].std():.2f}" if len(curves) > 1 else ""  # one seed has no spread
        last = f"{values[:, -1].mean():.2f}{spread} ({int(steps[-1])})"
        lines.append(f"| {env} | {COLUMNS.get(exp_name, exp_name)} | {len(curves)} | {format_best(best)} ({best['step']}) | "
                     f"{last} | {differing_flags(exp_name, env, flags[env, exp_name, fp])} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def check_inputs(args):
    """Stop in one line on folders that do not exist, rather than write empty tables over the old ones."""
    for folder in ([args.results] if args.results else []) + list(args.runs):
        if not Path(folder).is_dir():
            raise SystemExit(f"error: {folder} is not a folder")
    if args.readme and not Path(args.readme).is_file():
        raise SystemExit(f"error: {args.readme} is not a file")


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.report")
    check_inputs(args)
    try:
        groups, records = load_groups(args.results, args.runs)
    except (ValueError, KeyError, TypeError) as error:  # json.JSONDecodeError is a ValueError
        raise SystemExit(f"error: a record under {args.results} cannot be read: {error!r}")
    flags = {key: next(iter(seeds.values()))["flags"] for key, seeds in records.items()}  # one fingerprint: equal flags
    runs, other = split_by_defaults(groups)
    print(f"found {sum(len(c) for c in groups.values())} runs: {len(runs)} (task, algorithm) groups in Table 1's settings, "
          f"{len(other)} under other settings")  # fmt: skip
    results = {}
    for key, curves in runs.items():
        results[key] = best_point(curves, args.n_resamples, args.seed) or "no step common to all seeds"

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    known = {env for _, tasks, _ in TABLES for env in tasks}
    tables = [(t, tasks, cols + sorted({e for env, e in runs if env in tasks} - set(cols))) for t, tasks, cols in TABLES]
    others = sorted({env for env, _ in runs} - known)
    if others:
        tables.append(("Other tasks", {env: env for env in others}, sorted({e for env, e in runs if env in others})))
    note = (f"Each cell: ours as mean (CI low - mean, CI high - mean) with n seeds; then the paper's Table 1 number (the "
            f"paper reports no MPE: the MPE table is our inference, at {MPE_BUDGET / 1e6:g}M env steps, with random play "
            f"and the heuristic team as reference rows). "
            f"Bootstrap: {args.n_resamples} resamples of the seeds, percentiles 2.5/97.5, RNG seed {args.seed}; over 2 or 3 "
            f"seeds such an interval is about the seeds' range (over 2, exactly): it shows where the seeds fell, covers the "
            f"true mean far less often than 95%, and no verdict is read from it (the verdicts below have their own rule). "
            f"Only eval steps that every seed of a cell reached are used. Made by `benchmark/report.py`.")  # fmt: skip
    text = ["## Results: maximum average `eval/episodic_return` over evaluation points, 95% bootstrap CI over seeds", "",
            note, ""]  # fmt: skip
    rows = verdicts(runs, FAMILIES, args.reps, args.seed)
    table1 = [make_table(*table, results) for table in tables[: len(TABLES)]]
    stats = [metric_table(runs, tables), aggregate_table(runs, FAMILIES, args.reps, args.seed)]
    if plot_profiles(runs, FAMILIES, out / "profiles.png", args.reps, args.seed):
        stats.append("PROFILES")
    stats += [verdict_table(rows), ordering_lines(rows, FAMILIES)]
    for (family, tasks, _, orderings) in FAMILIES:
        stats += [gap_table(runs, rows, family, tasks, *ordering) for ordering in orderings]
    stats = [section for section in stats if section]
    figure = lambda folder: f"![performance profiles]({Path(os.path.relpath(out / 'profiles.png', folder)).as_posix()})\n"  # noqa: E731
    text += table1 + [make_table(*table, results) for table in tables[len(TABLES) :]]
    text += [figure(out) if section == "PROFILES" else section for section in stats]
    if runs:
        text.append(runs_table(records))
    if other:
        text.append(other_settings_table(other, flags, args.n_resamples, args.seed))
    # curves: Table 1's runs per task; a task with none shows its runs under other settings, labelled by their flags
    curves = dict(runs)
    for (env, exp_name, fp), group in other.items():
        if env not in {e for e, _ in runs}:
            label = f"{COLUMNS.get(exp_name, exp_name)} [{differing_flags(exp_name, env, flags[env, exp_name, fp])}]"
            curves[env, label] = group
    for env in sorted({env for env, _ in curves}):
        plot_task(env, curves, out / f"{env}.png", args.n_resamples, args.seed)
        text.append(f"![{env}]({env}.png)\n")
    (out / "report.md").write_text("\n".join(text))
    if args.readme:  # the front page: Table 1's tables, the verdicts over whole families, the orderings, the profiles
        report = Path(os.path.relpath(out / "report.md", Path(args.readme).parent)).as_posix()
        # the IQM per family stays in the report: the verdicts decide, and the front page has room for Table 1's three tables
        block = table1 + [family_verdict_table(rows, FAMILIES, report), ordering_lines(rows, FAMILIES, per_task=False)]
        if "PROFILES" in stats:
            block.append(figure(Path(args.readme).parent))
        write_readme_block(args.readme, [section for section in block if section])
        print(f"wrote the Table-1 block of {args.readme}")
    print("\n".join(text))
    print(f"wrote {out / 'report.md'}")
