"""Tests for envs/marbler.py against docs/marbler-simulator.md (§9.3 unit checks, §9.1 statistics, the envs/ API).

    pytest tests/test_marbler.py                 # fast checks (about 20 s on 2 cores)
    pytest tests/test_marbler.py -m slow         # only the long test: §9.1 reproduced with cvxopt, 200 episodes (~90 s)
    MARBLER_SLOW=1 pytest tests/test_marbler.py  # everything
"""

import os

import numpy as np
import pytest

from benchmark.studies.marbler_stats import REFERENCE, random_episodes  # §9.1 reference values and protocol
from envs import make_env
from envs.marbler import TASKS, MarblerEnv, Simulator, waypoints
from envs.robotarium import BarrierQP, exact_qp

LIMITS = {"marbler-arctic": 61, "marbler-material": 71, "marbler-pcp": 81, "marbler-warehouse": 101}
STAY = {"marbler-arctic": 4, "marbler-material": 16, "marbler-pcp": 4, "marbler-warehouse": 4}  # MT: 4 * move + msg


def place(env, x, y, theta):
    """Puts the robots at given poses after a reset (for the spot checks)."""
    env.poses = np.array([x, y, theta], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# §9.3 unit checks
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ticks, step, facing, perpendicular, away",
    [(29, 0.2, 0.109, 0.059, 0.144), (36, 0.1, 0.040, 0.024, 0.119), (36, 0.2, 0.119, 0.081, 0.169),
     (36, 0.3, 0.169, 0.097, 0.178), (74, 0.15, 0.097, 0.093, 0.191), (74, 0.45, 0.345, 0.287, 0.366)],
)  # fmt: skip
def test_displacement_table(ticks, step, facing, perpendicular, away):
    """§2.14: one robot, action "right", first-step displacement by heading, to 0.001 m."""
    sim = Simulator(1)
    for theta, expected in ((0.0, facing), (np.pi / 2, perpendicular), (np.pi, away)):
        poses = np.array([[0.0], [0.0], [theta]])
        wx, wy = waypoints(poses[0], poses[1], np.array([1]), np.array([step]))
        new, message, _ = sim.run(poses, wx, wy, ticks)
        assert message is None
        assert abs(np.hypot(new[0, 0], new[1, 0]) - expected) <= 0.001


def grid(xs, ys):
    return {(round(x, 6), round(y, 6)) for x in xs for y in ys}


ROBOT_SPAWNS = {
    "marbler-pcp": grid([-1.4], [-0.6, -0.3, 0, 0.3, 0.6]) | grid([-1.1, -0.8], np.arange(-0.9, 0.61, 0.3))
    | {(-0.5, -0.9)},
    "marbler-warehouse": grid([-1.4], [-0.3, 0.3]) | grid([-0.8, -0.2, 0.4], [-0.9, -0.3, 0.3]) | {(1.0, -0.9)},
    "marbler-material": grid([-1.4], [-0.6, -0.3, 0, 0.3, 0.6]) | {(-1.1, -0.9)},
}
PREY_SPAWNS = grid([0.5], np.arange(-0.7, 0.71, 0.2)) | grid([0.7, 0.9, 1.1], np.arange(-0.9, 0.71, 0.2)) | {(1.3, -0.9)}


@pytest.mark.parametrize("name", ["marbler-pcp", "marbler-warehouse", "marbler-material"])
def test_spawn_sets(name):
    """§3.3, §4.3, §5.4: spawns lie in the listed candidate sets, are distinct, and cover them."""
    env, seen, headings = MarblerEnv(name, 0), set(), []
    for _ in range(300):
        env.reset()
        points = [(round(x, 6), round(y, 6)) for x, y in env.poses[:2].T]
        assert len(set(points)) == env.n_agents and set(points) <= ROBOT_SPAWNS[name]
        seen |= set(points)
        headings.extend(env.poses[2])
        if name == "marbler-pcp":
            prey = [(round(x, 6), round(y, 6)) for x, y in env.task.prey]
            assert len(set(prey)) == 6 and set(prey) <= PREY_SPAWNS
    assert seen == ROBOT_SPAWNS[name]
    if name == "marbler-warehouse":
        assert np.std(headings) > 1.0 and np.all(np.abs(headings) <= np.pi)
    else:
        assert np.all(np.array(headings) == 0.0)


def test_arctic_reset():
    """§6.4: fixed start, goal block of 3s in the top two rows, normal bottom row, goal point."""
    env = MarblerEnv("marbler-arctic", 0)
    for _ in range(50):
        env.reset()
        np.testing.assert_allclose(env.poses, [[-0.3, 0.3, -0.9, 0.9], [-0.8] * 4, [np.pi / 2] * 4])
        grid_ = env.task.grid
        c = int(round((env.task.goal[0] + 1.5) / 0.25))
        assert 1 <= c <= 11 and env.task.goal[1] == 0.5
        assert np.all(grid_[0:2, c - 1 : c + 1] == 3) and (grid_ == 3).sum() == 4
        assert np.all(grid_[7, 1:11] == 0) and grid_.max() <= 3


def test_violation_geometry():
    """§9.3: facing each other 0.18 m apart collide; back to back 0.10 m apart do not; x = 1.6001 is out."""
    sim = Simulator(2)
    x, y, th = np.array([[-0.09, 0.09]]), np.zeros((1, 2)), np.array([[0.0, np.pi]])
    assert not sim.violation(x, y, np.cos(th), np.sin(th))[0][0] and sim.violation(x, y, np.cos(th), np.sin(th))[1][0]
    x, th = np.array([[-0.05, 0.05]]), np.array([[np.pi, 0.0]])
    assert not any(f[0] for f in sim.violation(x, y, np.cos(th), np.sin(th)))
    x, th = np.array([[1.6001, 0.0]]), np.zeros((1, 2))
    boundary, collision = sim.violation(x, y, np.cos(th), np.sin(th))
    assert boundary[0] and not collision[0]


@pytest.mark.parametrize("name, penalty", [("marbler-pcp", -5), ("marbler-warehouse", -5), ("marbler-material", -6),
                                           ("marbler-arctic", -30)])  # fmt: skip
def test_violation_ends_episode_with_penalty(name, penalty):
    env = MarblerEnv(name, 0)
    env.reset()
    env.poses[0, 0] = 1.6001  # out of bounds before the first tick
    _, rewards, terminated, truncated, info = env.step([STAY[name]] * env.n_agents)
    assert terminated and not truncated and info["message"] == "boundary"
    assert rewards == [float(penalty)] * env.n_agents


def test_warehouse_unload_reward_and_flag_lag():
    """§9.3: a loaded Green robot at (-1.2, 0.3) gets +3; that step's observation still shows loaded = 1."""
    env = MarblerEnv("marbler-warehouse", 0)
    env.reset()
    place(env, [-1.2, -0.4, 0.2, 0.8, -0.4, 0.2], [0.3, -0.6, -0.6, -0.6, 0.6, 0.6], [0.0] * 6)
    env.task.loaded[0] = True
    obs, rewards, terminated, _, _ = env.step([4] * 6)
    assert rewards == [3.0, 0, 0, 0, 0, 0] and not terminated
    assert obs[0][2] == 1.0 and obs[1][5] == 1.0  # own row, and agent 0's row (second) in agent 1's
    obs, rewards, _, _, _ = env.step([4] * 6)
    assert rewards == [0.0] * 6 and obs[0][2] == 0.0


def test_pcp_sense_and_capture_in_one_step():
    """§9.3: a prey sensed (predator 0) and captured (staying capture robot 2) in one step: 1 + 5 - 0.05."""
    env = MarblerEnv("marbler-pcp", 0)
    env.reset()
    env.task.prey = np.array([[0.0, 0.0], [1.3, 0.8], [1.3, 0.4], [1.3, 0.0], [1.3, -0.4], [1.3, -0.8]])
    place(env, [0.3, -1.2, -0.1, -1.2], [0.0, -0.6, 0.0, 0.6], [0.0] * 4)
    obs, rewards, terminated, _, _ = env.step([4] * 4)
    assert np.allclose(rewards, 5.95) and not terminated
    assert env.task.captured.tolist() == [True] + [False] * 5
    assert np.all(obs[0][2:4] == -5.0)  # captured prey are no longer observed


def test_material_pickup_in_zone2():
    """§9.3: fast robot in zone 2 with zone2 = 3 picks up 3: -0.1 + 0.025 * 3; loads show one step late."""
    env = MarblerEnv("marbler-material", 0)
    env.reset()
    env.task.zone2 = 3
    place(env, [1.2, -0.5, 0.5, -0.5], [0.0, 0.6, 0.6, -0.6], [0.0] * 4)
    messages = [1, 2, 3, 0]
    obs, rewards, terminated, _, _ = env.step([16 + m for m in messages])  # move 4 (stay), message m
    assert np.allclose(rewards, -0.025) and not terminated
    assert env.task.load.tolist() == [3, 0, 0, 0] and env.task.zone2 == 0
    assert obs[0][2] == 0 and obs[0][4] == 3 and obs[2][5:9].tolist() == messages


def test_arctic_goal_cell_has_no_distance_term():
    """§9.3: the ice robot on a goal cell adds nothing; the water robot pays -0.05 and its distance term."""
    env = MarblerEnv("marbler-arctic", 0)
    env.reset()
    gx, gy = env.task.goal
    place(env, [-0.3, 0.3, gx, 0.9 if gx < 0 else -0.9], [-0.8, -0.8, 0.75, -0.8], [np.pi / 2] * 4)
    _, rewards, terminated, _, _ = env.step([4] * 4)
    assert env.task.reached.tolist() == [False, False, True, False] and not terminated
    d2 = (env.poses[0, 3] - gx) ** 2 + (env.poses[1, 3] - gy) ** 2
    assert np.allclose(rewards, -0.05 - 0.075 * d2)


def test_arctic_step_length_follows_previous_terrain():
    """§6.2: the ice robot's waypoint step is 0.3 after an observation on ice, 0.1 on water; drones 0.3."""
    task = TASKS["marbler-arctic"]()
    task.cell_type = np.array([2, 0, 1, 1])
    assert task.step_lengths(None).tolist() == [0.3, 0.3, 0.3, 0.1]
    task.cell_type = np.array([0, 0, 2, 2])
    assert task.step_lengths(None).tolist() == [0.3, 0.3, 0.1, 0.3]


@pytest.mark.parametrize("name", list(LIMITS))
def test_time_out_step_counts(name):
    """§2.8: staying put never ends early; the time-out is step max + 1, reported as truncated."""
    env = MarblerEnv(name, 1)
    obs, _ = env.reset()
    for t in range(1, LIMITS[name] + 1):
        obs, rewards, terminated, truncated, info = env.step([STAY[name]] * env.n_agents)
        assert not terminated and truncated == (t == LIMITS[name])
    assert env.episode_limit == LIMITS[name]
    if name == "marbler-pcp":
        assert info["remaining"] == 6
    if name == "marbler-material":
        assert info["remaining"] == env.task.zone1 + env.task.zone2


def barrier_qps(rng, count):
    """(A, b, u0) of barrier QPs for random robot placements, built as BarrierQP builds them."""
    for _ in range(count):
        n = rng.integers(2, 7)
        xi = rng.uniform(-0.4, 0.4, (2, n))
        i, j = np.triu_indices(n, 1)
        e = xi[:, i] - xi[:, j]
        h = (e**2).sum(0) - 0.04
        A = np.zeros((len(i), 2 * n))
        A[np.arange(len(i)), 2 * i], A[np.arange(len(i)), 2 * i + 1] = -2 * e
        A[np.arange(len(i)), 2 * j], A[np.arange(len(i)), 2 * j + 1] = 2 * e
        b = np.where(h >= 0, 100, 1e6) * h**3
        yield A, b, rng.uniform(-0.15, 0.15, 2 * n)


def test_exact_qp_is_exact():
    """The exact solver returns the KKT point of min |u - u0|^2 s.t. A u <= b."""
    solved = 0
    for A, b, u0 in barrier_qps(np.random.default_rng(0), 300):
        u = exact_qp(A, b, u0)
        if u is None:
            continue
        solved += 1
        assert np.all(A @ u - b <= 1e-9 * (1 + np.abs(b)))
        active = np.abs(A @ u - b) <= 1e-9 * (1 + np.abs(b))
        mu, *_ = np.linalg.lstsq(A[active].T, u0 - u, rcond=None)  # stationarity: u0 - u = A_act^T mu
        assert np.allclose(A[active].T @ mu, u0 - u, atol=1e-9) and np.all(mu >= -1e-9)
    assert solved >= 250


def test_exact_solver_falls_back_to_cvxopt(monkeypatch):
    """A QP that DAQP reports infeasible, or an error inside DAQP, takes MARBLER's cvxopt path instead of failing."""
    A = np.array([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]])  # u_1x <= -1 and u_1x >= 1: DAQP detects there is no solution
    assert exact_qp(A, np.array([-1.0, -1.0]), np.array([0.1, 0.0, 0.0, 0.1])) is None
    qp_daqp, qp_cvxopt = BarrierQP(3, "daqp"), BarrierQP(3, "cvxopt")
    rng = np.random.default_rng(3)
    A, b, u0 = next(qp for qp in barrier_qps(rng, 100) if len(qp[2]) == 6 and np.any(qp[0] @ qp[2] > qp[1]))
    assert not np.array_equal(qp_daqp.solve(A, b, u0), qp_cvxopt.solve(A, b, u0))  # the two paths differ here

    def infeasible(H, f, A, bupper, blower, sense):
        return np.zeros(len(f)), 0.0, -1, {}  # DAQP's exit flag for an infeasible problem

    def broken(*args):
        raise RuntimeError("solver error")

    for fake in (infeasible, broken):
        monkeypatch.setattr("envs.robotarium.daqp.solve", fake)
        np.testing.assert_array_equal(qp_daqp.solve(A, b, u0), qp_cvxopt.solve(A, b, u0))


# ---------------------------------------------------------------------------------------------------------
# API, determinism, rendering
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(LIMITS))
def test_make_env_api(name):
    env = make_env(name, 0)
    sizes = {"marbler-arctic": (4, 30, 5), "marbler-material": (4, 9, 20), "marbler-pcp": (4, 16, 5),
             "marbler-warehouse": (6, 18, 5)}  # fmt: skip
    assert (env.n_agents, env.obs_size, env.n_actions) == sizes[name] and env.episode_limit == LIMITS[name]
    obs, info = env.reset()
    assert isinstance(obs, tuple) and len(obs) == env.n_agents and isinstance(info, dict)
    assert all(o.dtype == np.float32 and o.shape == (env.obs_size,) and not o.any() for o in obs)  # §2.9 quirk
    rng = np.random.default_rng(0)
    for t in range(1, env.episode_limit + 1):
        obs, rewards, terminated, truncated, info = env.step(rng.integers(env.n_actions, size=env.n_agents))
        assert all(o.dtype == np.float32 and o.shape == (env.obs_size,) for o in obs)
        assert isinstance(rewards, list) and len(rewards) == env.n_agents and all(type(r) is float for r in rewards)
        assert type(terminated) is bool and type(truncated) is bool and not (terminated and truncated)
        assert info["dist_travelled"].shape == (env.n_agents,)
        if terminated or truncated:
            break
    assert truncated == (t == env.episode_limit and "message" not in info)
    assert info["episode"]["l"] == t
    env.close()


@pytest.mark.parametrize("name", list(LIMITS))
def test_the_exact_suffix_picks_the_exact_solver(name):
    """`marbler-<task>-exact` is the task with DAQP's exact QP: every script reaches it by --env, with no code of its own."""
    rng = np.random.default_rng(2)
    exact, plain, direct = make_env(f"{name}-exact", 4), make_env(name, 4), MarblerEnv(name, 4, solver="daqp")
    assert (exact.env.sim.qp.solver, plain.env.sim.qp.solver) == ("daqp", "cvxopt")
    for env in (exact, direct):
        env.reset()
    for _ in range(20):
        actions = rng.integers(exact.n_actions, size=exact.n_agents)
        a, b = exact.step(actions), direct.step(actions)
        assert all(np.array_equal(x, y) for x, y in zip(a[0], b[0])) and a[1] == b[1]
        if a[2] or a[3]:
            break


@pytest.mark.parametrize("solver", ["cvxopt", "daqp"])
@pytest.mark.parametrize("name", list(LIMITS))
def test_determinism(name, solver):
    def episode(seed):
        env, rng, out = MarblerEnv(name, seed, solver=solver), np.random.default_rng(5), []
        for _ in range(2):
            env.reset()
            for _ in range(25):
                obs, rewards, terminated, truncated, _ = env.step(rng.integers(env.n_actions, size=env.n_agents))
                out.append(np.concatenate(obs + (rewards,)))
                if terminated or truncated:
                    break
        return np.concatenate(out)

    a, b = episode(3), episode(3)
    assert np.array_equal(a, b)
    c = episode(4)
    assert len(a) != len(c) or not np.array_equal(a, c)


def test_real_first_obs_option():
    env = MarblerEnv("marbler-warehouse", 0, real_first_obs=True)
    obs, _ = env.reset()
    assert np.allclose(obs[0][:2], env.poses[:2, 0]) and obs[0][2] == 0.0


@pytest.mark.parametrize("name", list(LIMITS))
def test_render(name):
    env = MarblerEnv(name, 0)
    env.reset()
    env.step([0] * env.n_agents)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.shape[:2] == (400, 640)
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 5
    env.close()


# ---------------------------------------------------------------------------------------------------------
# §9.1 statistics under a uniform-random policy
# ---------------------------------------------------------------------------------------------------------
def check_statistics(name, stats, z=3.0):
    """Every statistic within z standard errors of the reference (the reference's own 200-episode error included)."""
    length, boundary, collision, ret, ret_sd, team, remaining = REFERENCE[name]
    n = len(stats["length"])
    se = np.sqrt(1 / n + 1 / 200)
    assert abs(stats["length"].mean() - length) <= z * stats["length"].std() * se
    for count, msg in ((boundary, "boundary"), (collision, "collision")):
        p = count / 200
        assert abs((stats["message"] == msg).mean() - p) <= z * np.sqrt(p * (1 - p)) * se + 1e-9
    assert abs(stats["return"].mean() - ret) <= z * ret_sd * se
    assert abs(stats["team"].mean() - team) <= z * stats["team"].std() * se
    if remaining is not None:
        assert abs(stats["remaining"].mean() - remaining) <= z * max(stats["remaining"].std(), 0.1) * se


@pytest.mark.parametrize("name", list(LIMITS))
def test_random_policy_statistics_fast_solver(name):
    """§9.1 within sampling error, 150 episodes with the exact solver (fast enough for every run)."""
    check_statistics(name, random_episodes(name, 150, solver="daqp", seed=1))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LIMITS))
def test_random_policy_statistics_reproduce_marbler(name, request):
    """§9.1 with the default cvxopt solver and the reference protocol (seed 0, 200 episodes): PCP, Warehouse and
    MT reproduce MARBLER's numbers to the printed digits; AT's goal column comes from another RNG than
    MARBLER's, so it is only checked within sampling error (it happens to match to the printed digits too)."""
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("MARBLER_SLOW"):
        pytest.skip("long test: run with -m slow or MARBLER_SLOW=1")
    stats = random_episodes(name, 200, solver="cvxopt", seed=0)
    check_statistics(name, stats)
    length, boundary, collision, ret, ret_sd, team, remaining = REFERENCE[name]
    if name != "marbler-arctic":

        def printed(value, reference, digits):  # equal to the reference's printed digits
            return abs(value - reference) <= 0.5 * 10**-digits + 1e-9

        assert (stats["message"] == "boundary").sum() == boundary and (stats["message"] == "collision").sum() == collision
        assert printed(stats["length"].mean(), length, 1) and printed(stats["return"].mean(), ret, 2)
        assert printed(stats["team"].mean(), team, 2) and printed(stats["return"].std(), ret_sd, 2)
        if remaining is not None:
            assert printed(stats["remaining"].mean(), remaining, 1)
