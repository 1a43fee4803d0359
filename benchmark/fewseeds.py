"""Statistics for comparisons over a few seeds, used by benchmark/report.py (never by the training scripts).

Interval estimates come from `rliable` (Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical
Precipice", NeurIPS 2021): the interquartile mean (IQM) of normalised scores and the probability of improvement, each
with a 95% stratified percentile bootstrap interval (seeds are resampled within each task), and performance profiles.
Over 2 or 3 seeds such intervals cover far less than 95% (tests/test_benchmark.py measures it), so a verdict also needs
an exact permutation test, whose false-positive rate is at most 5% at any number of seeds and which says when no
arrangement of the seeds could reach p < 0.05.

VERDICT_RULE below is the one rule every comparison of the report uses.
"""

import itertools
import math
import warnings

import numpy as np

ALPHA = 0.05
VERDICT_RULE = (
    "A against B over a set of tasks (one task, or a family of tasks), on each seed's mean over the last 10% of its "
    "evaluations: **above** (or **below**) when an exact permutation test of the probability of improvement P(A > B), "
    "with seeds exchanged only within each task, gives two-sided p < 0.05 *and* the 95% stratified bootstrap interval of "
    "P(A > B) lies wholly above (below) 0.5; **too few seeds to tell** when no arrangement of these seeds could give "
    "p < 0.05 (on one task that is every comparison of 3 seeds against 3 or fewer; over two tasks, 2 seeds against 2); "
    "otherwise **no difference shown**, which is not a finding that the two are equal."
)
VERDICTS = ("above", "below", "no difference shown", "too few seeds to tell")
FLIP = {"above": "below", "below": "above"}


def last_tenth(values):
    """A run's score: the mean over the last 10% of its evaluations (at least one), in the order they were logged."""
    values = np.asarray(values, dtype=np.float64)
    return float(values[-max(1, math.ceil(0.1 * len(values))) :].mean())


def improvement(x, y):
    """P(X > Y) on one task, ties counted as one half: the Mann-Whitney U statistic over len(x) * len(y)."""
    x, y = np.asarray(x, dtype=np.float64)[:, None], np.asarray(y, dtype=np.float64)[None, :]
    return float((x > y).mean() + 0.5 * (x == y).mean())


def mean_improvement(x, y):
    """P(X > Y) averaged over tasks, for (runs, tasks) matrices: rliable's probability_of_improvement, vectorised."""
    x, y = x[:, None, :], y[None, :, :]
    return np.array([((x > y).mean(axis=(0, 1)) + 0.5 * (x == y).mean(axis=(0, 1))).mean()])


def permutation_test(xs, ys, max_exact=2_000_000, n_random=200_000, seed=0):
    """Two-sided p of the mean over tasks of P(X > Y), with the seeds of each task relabelled in every way (exact while
    the arrangements number at most `max_exact`, else `n_random` random ones), and the smallest p any arrangement of
    these values could give. `xs`, `ys`: one array of run scores per task."""
    per_task = []
    for x, y in zip(xs, ys):
        pooled, n_x = np.concatenate([x, y]).astype(np.float64), len(x)
        stats = []
        for chosen in itertools.combinations(range(len(pooled)), n_x):
            mask = np.zeros(len(pooled), dtype=bool)
            mask[list(chosen)] = True
            stats.append(improvement(pooled[mask], pooled[~mask]))
        per_task.append(np.array(stats))
    if math.prod(len(s) for s in per_task) <= max_exact:
        total = np.zeros(1)
        for stats in per_task:  # every combination of one arrangement per task
            total = (total[:, None] + stats[None, :]).ravel()
    else:
        rng = np.random.default_rng(seed)
        total = sum(stats[rng.integers(0, len(stats), n_random)] for stats in per_task)
    distance = np.abs(total / len(per_task) - 0.5)
    observed = abs(np.mean([improvement(x, y) for x, y in zip(xs, ys)]) - 0.5)
    eps = 1e-9  # equal statistics reached by different arrangements must count as equal
    return float((distance >= observed - eps).mean()), float((distance >= distance.max() - eps).mean())


def interval(score_dict, func, reps, seed):
    """rliable's point estimates and 95% stratified percentile bootstrap intervals, seeded."""
    from rliable import library as rly

    state = np.random.get_state()
    np.random.seed(seed)  # rliable 1.2.0's stratified bootstrap draws from numpy's global generator, not random_state
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # arch's note that RandomState will give way to Generator
            return rly.get_interval_estimates(score_dict, func, reps=reps, random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(state)  # and leaves the caller's stream as it was


def iqm(score_dict, reps=2000, seed=0):
    """{name: (IQM, lo, hi)} for {name: (runs, tasks) matrix of normalised scores}."""
    from rliable import metrics

    points, cis = interval(score_dict, lambda scores: np.array([metrics.aggregate_iqm(scores)]), reps, seed)
    return {name: (float(points[name][0]), float(cis[name][0][0]), float(cis[name][1][0])) for name in score_dict}


def compare(x, y, reps=2000, seed=0):
    """Verdict of A against B from (runs, tasks) matrices of their scores (runs may differ in number between A and B):
    {"poi", "lo", "hi", "p", "min_p", "verdict"}."""
    xs, ys = list(x.T), list(y.T)
    p, min_p = permutation_test(xs, ys)
    poi = float(mean_improvement(x, y)[0])
    _, cis = interval({"ab": [x, y]}, mean_improvement, reps, seed)
    lo, hi = float(cis["ab"][0][0]), float(cis["ab"][1][0])
    if min_p >= ALPHA:
        verdict = "too few seeds to tell"
    else:
        verdict = "above" if p < ALPHA and lo > 0.5 else "below" if p < ALPHA and hi < 0.5 else "no difference shown"
    return {"poi": poi, "lo": lo, "hi": hi, "p": p, "min_p": min_p, "verdict": verdict}


def profiles(score_dict, taus, reps=2000, seed=0):
    """Performance profiles: for each tau the share of all runs (every task, every seed) whose normalised score exceeds
    tau, with 95% stratified bootstrap bands; ({name: profile}, {name: (2, len(taus)) band})."""
    from rliable import library as rly

    return interval(score_dict, lambda scores: rly.score_distributions(scores, taus), reps, seed)
