"""MARBLER Robotarium tasks (Arctic Transport, Material Transport, Predator Capture Prey, Warehouse).

A clean-room re-implementation from specs/marbler.md ("§" below cites it), behind the API of envs/__init__.py.
The Robotarium simulator core is written once in numpy, with cvxopt for the barrier-certificate QP (§8.7):
discrete action -> waypoint (§2.3), go-to-point controller + barrier QP + unicycle mapping (§2.4), Euler
ticks (§2.5) with a violation test before each tick (§2.6, §2.7), and the grid spawn sampler (§2.12).
The four scenarios only define spawns, step lengths, observations, rewards and termination.

Replicated quirks (§10): reset returns all-zero observations, "up" (action 2) decreases y, Warehouse/MT
observations show load flags one step late, the controller is refreshed every 15 ticks, cvxopt runs with
MARBLER's loose tolerances. Deviation (§2.8, project decision): the time-out is reported as truncated.
"""

import random

import numpy as np
from cvxopt import matrix, solvers

# §2.2 simulator constants
DT = 0.033  # seconds per simulator tick
MAX_V = 0.2  # linear speed clip (m/s)
MAX_W = 2 * (0.016 / 0.11) * (0.2 / 0.016)  # angular speed clip (rad/s), never binds after the pi clip
ARENA_X, ARENA_Y = 1.6, 1.0  # boundary test: strictly outside counts
COLLISION_OFFSET, COLLISION_DIST = 0.025, 0.135  # test points ahead of the centre; <= counts
# §2.4 controller constants
PROJECTION = 0.05  # control point ahead of the centre (m)
GOTO_LIMIT = 0.15  # go-to-point speed limit (m/s)
BARRIER_LIMIT = 0.2  # barrier input magnitude limit (never binds after GOTO_LIMIT)
SAFETY_RADIUS = 0.2
BARRIER_GAIN, UNSAFE_GAIN = 100.0, 1e6
CONTROL_EVERY = 15  # ticks between controller updates with `robotarium: False` (§2.6)
# §2.1 navigable box shared by all four configs; MARBLER's UP is the *minimum* y
LEFT, RIGHT, UP, DOWN = -1.4, 1.4, -0.9, 0.9
# MARBLER's options; passed per call so the global cvxopt.solvers.options stay untouched (§8.7)
CVXOPT_OPTIONS = {"reltol": 1e-2, "feastol": 1e-2, "maxiters": 50, "show_progress": False}


# ---------------------------------------------------------------------------------------------------------
# simulator core
# ---------------------------------------------------------------------------------------------------------
def grid_spawn(rng, n, spacing, width, height):
    """Robotarium's old grid sampler (§2.12): n distinct lattice points, skipping (0, 0), plus n headings."""
    nx, ny = int(np.floor(width / spacing)), int(np.floor(height / spacing))
    c = rng.choice(nx * ny, n, replace=False) + 1
    x = (c // ny) * spacing - width / 2
    y = (c % ny) * spacing - height / 2
    theta = rng.rand(n) * 2 * np.pi - np.pi  # drawn after all the choices, even where the task overrides them
    return np.stack([x, y, theta]).astype(np.float64)


def waypoints(x, y, moves, step):
    """§2.3: action ids 0 left, 1 right, 2 "up" (-y), 3 "down" (+y), 4 stay; only the limit ahead is applied."""
    wx, wy = np.minimum(np.maximum(x, LEFT), RIGHT), np.minimum(np.maximum(y, UP), DOWN)
    wx = np.where(moves == 0, np.maximum(x - step, LEFT), np.where(moves == 1, np.minimum(x + step, RIGHT), wx))
    wy = np.where(moves == 2, np.maximum(y - step, UP), np.where(moves == 3, np.minimum(y + step, DOWN), wy))
    return wx, wy


class BarrierQP:
    """Single-integrator barrier certificate, variant 2 (§2.4 step 3), for a fixed number of robots.

    Solves min sum_i |u_i - u0_i|^2 s.t. -2 e_ij.(u_i - u_j) <= gamma(h_ij) h_ij^3 for every pair i < j.
    `solver="cvxopt"` reproduces MARBLER (loose tolerances, whatever iterate cvxopt returns); `"active_set"`
    is an exact dual active-set solver, about 10x cheaper, that changes near-collision trajectories (§8.6).
    """

    def __init__(self, n, solver="cvxopt"):
        if solver not in ("cvxopt", "active_set"):
            raise ValueError(f"unknown barrier QP solver {solver!r}; use 'cvxopt' or 'active_set'")
        self.n, self.solver = n, solver
        self.i, self.j = np.triu_indices(n, 1)  # constraint rows in pair order (0,1), (0,2), ... (§8.6)
        m = len(self.i)
        rows = np.arange(m)
        # flat positions of the four non-zeros of each row of A (m, 2n), built once
        self.flat_i = np.concatenate([rows * 2 * n + 2 * self.i, rows * 2 * n + 2 * self.i + 1])
        self.flat_j = np.concatenate([rows * 2 * n + 2 * self.j, rows * 2 * n + 2 * self.j + 1])
        self.A = np.zeros((m, 2 * n))
        self.P = matrix(2.0 * np.eye(2 * n))

    def __call__(self, xi_x, xi_y, ux, uy):
        ex, ey = xi_x[self.i] - xi_x[self.j], xi_y[self.i] - xi_y[self.j]
        h = (ex * ex + ey * ey) - SAFETY_RADIUS**2  # 0.2**2 as a float power, as the original (§8.6)
        b = np.where(h >= 0, BARRIER_GAIN, UNSAFE_GAIN) * np.power(h, 3)
        e = np.concatenate([ex, ey])
        self.A.flat[self.flat_i], self.A.flat[self.flat_j] = -2 * e, 2 * e
        norm = np.sqrt(ux * ux + uy * uy)
        scale = np.where(norm > BARRIER_LIMIT, BARRIER_LIMIT / np.where(norm > 0, norm, 1.0), 1.0)
        u0 = np.stack([ux * scale, uy * scale], axis=1).ravel()  # (u1x, u1y, u2x, ...)
        if len(b) == 0:  # a single robot: nothing to certify
            return u0[0::2], u0[1::2]
        if self.solver == "active_set":
            u = active_set_qp(self.A, b, u0)
            if u is not None:
                return u[0::2], u[1::2]
        u = np.array(solvers.qp(self.P, matrix(-2 * u0), matrix(self.A), matrix(b), options=CVXOPT_OPTIONS)["x"])
        return u[0::2, 0], u[1::2, 0]


def active_set_qp(A, b, u0, tol=1e-12, max_iter=100):
    """Exact min 0.5|u - u0|^2 s.t. A u <= b by Goldfarb-Idnani's dual active-set method with Hessian I.

    Starts from the unconstrained optimum u0 (feasible in most controller updates, then it is returned as
    is) and adds the most violated constraint until none is violated. Returns None if the QP is infeasible.
    """
    u = u0.copy()
    active, mult = [], np.zeros(0)  # active constraint ids and their multipliers
    for _ in range(max_iter):
        viol = A @ u - b
        p = int(np.argmax(viol))
        if viol[p] <= tol * (1.0 + abs(b[p])):
            return u
        lam = 0.0  # multiplier of the constraint p being added
        while True:
            n_p = -A[p]  # constraint written as n_p . u >= -b_p
            if active:
                N = -A[active].T  # (2n, q) normals of the active constraints, linearly independent
                r = np.linalg.solve(N.T @ N, N.T @ n_p)
                z = n_p - N @ r  # primal step direction: n_p projected off the active normals
            else:
                r, z = np.zeros(0), n_p
            zz = z @ z
            # largest dual step keeping the active multipliers non-negative
            blocking = np.flatnonzero(r > 0)
            t_dual, k = np.inf, -1
            if len(blocking):
                ratios = mult[blocking] / r[blocking]
                k = blocking[int(np.argmin(ratios))]
                t_dual = ratios.min()
            slack = A[p] @ u - b[p]  # > 0 while p is violated
            t_full = slack / zz if zz > 1e-14 else np.inf
            if not np.isfinite(t_dual) and not np.isfinite(t_full):
                return None  # p cannot be satisfied together with the active set
            t = min(t_dual, t_full)
            if np.isfinite(t_full):
                u = u + t * z
            mult = mult - t * r
            lam += t
            if t == t_full:
                active.append(p)
                mult = np.append(mult, lam)
                break
            del active[k]  # partial step: drop the blocking constraint and retry adding p
            mult = np.delete(mult, k)
    return None


class Simulator:
    """Robotarium motion for one env step (§2.4-§2.7), vectorised over the ticks between controller updates."""

    def __init__(self, n, solver="cvxopt"):
        self.n = n
        self.qp = BarrierQP(n, solver)
        self.i, self.j = np.triu_indices(n, 1)

    def controller(self, x, y, cos, sin, wx, wy):
        """§2.4: go-to-point on the control point, barrier QP, single-integrator -> unicycle, clips."""
        xi_x, xi_y = x + PROJECTION * cos, y + PROJECTION * sin
        ux, uy = wx - xi_x, wy - xi_y
        norm = np.sqrt(ux * ux + uy * uy)
        scale = np.where(norm > GOTO_LIMIT, GOTO_LIMIT / np.where(norm > 0, norm, 1.0), 1.0)
        ux, uy = self.qp(xi_x, xi_y, ux * scale, uy * scale)
        v = cos * ux + sin * uy
        w = np.minimum(np.maximum((1 / PROJECTION) * (-sin * ux + cos * uy), -np.pi), np.pi)  # reciprocal (§8.6)
        return np.minimum(np.maximum(v, -MAX_V), MAX_V), np.minimum(np.maximum(w, -MAX_W), MAX_W)

    def violation(self, x, y, cos, sin):
        """§2.7 for a block of poses (ticks, n): per-tick boundary and collision flags."""
        boundary = ((x < -ARENA_X) | (x > ARENA_X) | (y < -ARENA_Y) | (y > ARENA_Y)).any(axis=1)
        px, py = x + COLLISION_OFFSET * cos, y + COLLISION_OFFSET * sin
        dx, dy = px[:, self.i] - px[:, self.j], py[:, self.i] - py[:, self.j]
        collision = (np.sqrt(dx * dx + dy * dy) <= COLLISION_DIST).any(axis=1)
        return boundary, collision

    def run(self, poses, wx, wy, ticks):
        """Simulates `ticks` ticks from poses (3, n); stops after the first tick whose start pose violates.

        Returns (new poses, violation message or None, per-tick centre displacement (ticks run, n)).
        Within a block of ticks the velocities are constant, so the headings are the only sequential part;
        positions follow with a sequential cumulative sum, which adds in the same order as tick-by-tick Euler.
        """
        x, y, th = poses
        disp = []
        for k0 in range(0, ticks, CONTROL_EVERY):
            nt = min(CONTROL_EVERY, ticks - k0)
            th_k = np.empty((nt + 1, self.n))  # heading before each tick, then after the last
            th_k[0] = th
            cos0, sin0 = np.cos(th), np.sin(th)
            v, w = self.controller(x, y, cos0, sin0, wx, wy)
            dth = DT * w
            t, s_, c_ = np.empty(self.n), np.empty(self.n), np.empty(self.n)
            for k in range(nt):  # §2.5: theta <- atan2(sin(theta + dt w), cos(theta + dt w))
                np.add(th_k[k], dth, out=t)
                np.arctan2(np.sin(t, out=s_), np.cos(t, out=c_), out=th_k[k + 1])
            cos, sin = np.cos(th_k[:nt]), np.sin(th_k[:nt])
            xs, ys = np.empty((nt + 1, self.n)), np.empty((nt + 1, self.n))
            xs[0], ys[0] = x, y
            xs[1:], ys[1:] = (DT * cos) * v, (DT * sin) * v  # x <- x + (dt cos theta) v  (§2.5 bracketing)
            np.add.accumulate(xs, axis=0, out=xs)
            np.add.accumulate(ys, axis=0, out=ys)
            boundary, collision = self.violation(xs[:nt], ys[:nt], cos, sin)
            bad = boundary | collision
            stop = int(np.argmax(bad)) if bad.any() else nt  # the violating tick is still integrated (§2.6)
            last = min(stop + 1, nt)
            disp.append(np.hypot(xs[1 : last + 1] - xs[:last], ys[1 : last + 1] - ys[:last]))
            x, y, th = xs[last], ys[last], th_k[last]
            if stop < nt:
                message = "collision_boundary" if boundary[stop] and collision[stop] else (
                    "collision" if collision[stop] else "boundary")
                return np.stack([x, y, th]), message, np.concatenate(disp)
        return np.stack([x, y, th]), None, np.concatenate(disp)


# ---------------------------------------------------------------------------------------------------------
# scenarios: each defines reset (poses), step lengths, and the post-motion update (obs, rewards, done, info)
# ---------------------------------------------------------------------------------------------------------
def neighbour_rows(rows):
    """§2.10 with num_neighbors >= N - 1: own row, then every other agent's row in increasing id order."""
    n = len(rows)
    return [np.concatenate([rows[a]] + [rows[j] for j in range(n) if j != a]) for a in range(n)]


class PredatorCapturePrey:
    """§3: predators 0-1 sense prey within 0.45 m, capture robots 2-3 capture sensed prey within 0.25 m
    when their action is 4 (stay). Shared reward +1 per newly sensed, +5 per captured, -0.05 per step."""

    n_agents, obs_size, n_actions, max_episode_steps, ticks, penalty = 4, 16, 5, 80, 29, -5.0
    sense_radius = np.array([0.45, 0.45, 0.0, 0.0])
    capture_radius = np.array([0.0, 0.0, 0.25, 0.25])
    num_prey, robot_right_thresh, prey_left_thresh, step_dist, start_dist = 6, -0.5, 0.5, 0.2, 0.3

    def reset(self, rng, py_rng):
        width = self.robot_right_thresh - LEFT  # 0.8999..., computed as the original does (§2.12)
        poses = grid_spawn(rng, self.n_agents, self.start_dist, width, DOWN - UP)
        poses[0] -= width / 2 - self.robot_right_thresh  # spawn on the left, facing +x (§3.3)
        poses[2] = 0.0
        width = RIGHT - self.prey_left_thresh
        prey = grid_spawn(rng, self.num_prey, self.step_dist, width, DOWN - UP)[:2]
        prey[0] += width / 2 - self.robot_right_thresh  # MARBLER passes the robots' threshold here (§3.3)
        self.prey = prey.T  # (num_prey, 2)
        self.sensed = np.zeros(self.num_prey, bool)
        self.captured = np.zeros(self.num_prey, bool)
        return poses

    def step_lengths(self, moves):
        return np.full(self.n_agents, self.step_dist)

    def update(self, poses, actions, moves, violation, timeout):
        d = np.hypot(poses[0][:, None] - self.prey[:, 0], poses[1][:, None] - self.prey[:, 1])  # (robots, prey)
        # §3.4 tracking (also on a violation step): sense, then capture sensed prey by staying capture robots
        new_sensed = ~self.captured & ~self.sensed & (d <= self.sense_radius[:, None]).any(axis=0)
        self.sensed |= new_sensed
        catch = (d <= self.capture_radius[:, None]) & (moves == 4)[:, None]
        new_captured = ~self.captured & self.sensed & catch.any(axis=0)
        self.captured |= new_captured
        # §3.5 rows: [x, y, nearest uncaptured prey within the agent's sensing radius or (-5, -5)]
        visible = ~self.captured & (d <= self.sense_radius[:, None])
        rows = []
        for a in range(self.n_agents):
            if visible[a].any():
                p = self.prey[np.argmin(np.where(visible[a], d[a], np.inf))]  # ties: lowest prey id
            else:
                p = (-5.0, -5.0)
            rows.append(np.array([poses[0, a], poses[1, a], p[0], p[1]]))
        r = 1.0 * new_sensed.sum() + 5.0 * new_captured.sum() - 0.05
        done_all = bool(self.captured.all())
        info = {}
        if violation is None and (done_all or timeout):
            info["remaining"] = int((~self.captured).sum())
        r = self.penalty if violation else r
        return neighbour_rows(rows), [float(r)] * self.n_agents, done_all, info

    def draw(self, ax, poses):
        from matplotlib.patches import Circle

        for p, s, c in zip(self.prey, self.sensed, self.captured):
            ax.plot(*p, marker="x" if c else "o", ms=7, color="grey" if c else ("tab:red" if s else "k"))
        for a in range(self.n_agents):
            radius = max(self.sense_radius[a], self.capture_radius[a])
            colour = "tab:blue" if self.sense_radius[a] > 0 else "tab:orange"
            ax.add_patch(Circle(poses[:2, a], radius, fill=False, ls="--", lw=0.8, color=colour))
        return ["tab:blue"] * 2 + ["tab:orange"] * 2


class Warehouse:
    """§4: Green (even ids) load at the lower right and unload at the upper left, Red (odd ids) the mirror;
    individual reward +1 per pick-up, +3 per drop-off. Observation flags lag one step (quirk)."""

    n_agents, obs_size, n_actions, max_episode_steps, ticks, penalty = 6, 18, 5, 100, 29, -5.0
    step_dist, start_dist, goal_width = 0.2, 0.6, 0.5

    def reset(self, rng, py_rng):
        poses = grid_spawn(rng, self.n_agents, self.start_dist, RIGHT - LEFT, DOWN - UP)
        poses[0] += (1.5 + LEFT) / 2 - (1.5 - RIGHT) / 2  # both shifts are 0 for the config (§4.3)
        poses[1] += (1 - DOWN) / 2 - (1 + UP) / 2
        self.loaded = np.zeros(self.n_agents, bool)  # headings stay random
        return poses

    def step_lengths(self, moves):
        return np.full(self.n_agents, self.step_dist)

    def update(self, poses, actions, moves, violation, timeout):
        x, y = poses[0], poses[1]
        rows = [np.array([x[a], y[a], float(self.loaded[a])]) for a in range(self.n_agents)]  # before update
        right, left, upper = x > 1.5 - self.goal_width, x < -(1.5 - self.goal_width), y > 0
        green = np.arange(self.n_agents) % 2 == 0
        in_load = right & np.where(green, ~upper, upper)
        in_unload = left & np.where(green, upper, ~upper)
        unload, load = self.loaded & in_unload, ~self.loaded & in_load
        rewards = 3.0 * unload + 1.0 * load
        if violation:
            rewards = np.full(self.n_agents, self.penalty)
        else:
            self.loaded = (self.loaded & ~unload) | load
        return neighbour_rows(rows), [float(r) for r in rewards], False, {}

    def draw(self, ax, poses):
        from matplotlib.patches import Rectangle

        g = self.goal_width
        for x0, y0, colour in ((1.0, -1.0, "tab:green"), (-1.5, 0.0, "tab:green"), (1.0, 0.0, "tab:red"),
                               (-1.5, -1.0, "tab:red")):
            ax.add_patch(Rectangle((x0, y0), g, 1.0, color=colour, alpha=0.25, lw=0))
        for a in range(self.n_agents):
            if self.loaded[a]:
                ax.plot(*poses[:2, a], marker="s", ms=5, color="k", zorder=5)
        return ["tab:green" if a % 2 == 0 else "tab:red" for a in range(self.n_agents)]


class MaterialTransport:
    """§5: fast/small robots 0-1 and slow/large robots 2-3 carry material from zone 1 (disc at the origin)
    and zone 2 (right strip) to the drop-off strip on the left. Action = 4 * move + message (§5.2)."""

    n_agents, obs_size, n_actions, max_episode_steps, ticks, penalty = 4, 9, 20, 70, 74, -6.0
    steps = np.array([0.45, 0.45, 0.15, 0.15])
    capacity = np.array([5, 5, 15, 15])
    goal_width, zone1_radius, start_dist = 0.5, 0.35, 0.3

    def reset(self, rng, py_rng):
        self.zone1 = int(rng.normal(100, 10))  # int() truncates toward zero (§5.4)
        self.zone2 = int(rng.normal(20, 4))
        poses = grid_spawn(rng, self.n_agents, self.start_dist, self.goal_width, DOWN - UP)
        poses[0] -= self.goal_width / 2 + 0.9  # shift -1.15: all spawns inside the drop-off strip (§5.4)
        poses[2] = 0.0
        self.load = np.zeros(self.n_agents, int)
        return poses

    def step_lengths(self, moves):
        return self.steps

    def update(self, poses, actions, moves, violation, timeout):
        messages = [float(a % 4) for a in actions]
        obs = [np.array([poses[0, a], poses[1, a], self.load[a], self.zone1, self.zone2] + messages)
               for a in range(self.n_agents)]  # loads before this step's loading (quirk, §5.5)
        r = -0.1
        if not violation:
            for a in range(self.n_agents):  # id order: fast robots load first (§5.6)
                x, y = poses[0, a], poses[1, a]
                if self.load[a] > 0:
                    if x < -1.5 + self.goal_width:
                        r += 0.075 * self.load[a]
                        self.load[a] = 0
                elif x > 1.5 - self.goal_width:
                    take = min(self.capacity[a], self.zone2)
                    self.zone2 -= take
                    self.load[a] = take
                    r += 0.025 * take
                elif np.hypot(x, y) <= self.zone1_radius:
                    take = min(self.capacity[a], self.zone1)
                    self.zone1 -= take
                    self.load[a] = take
                    r += 0.025 * take
        else:
            r = self.penalty
        delivered = self.zone1 == 0 and self.zone2 == 0 and not self.load.any()
        info = {}
        if delivered or timeout or violation:
            info["remaining"] = int(self.zone1 + self.zone2 + self.load.sum())
        return obs, [float(r)] * self.n_agents, delivered, info

    def draw(self, ax, poses):
        from matplotlib.patches import Circle, Rectangle

        g = self.goal_width
        ax.add_patch(Rectangle((-1.5, -1.0), g, 2.0, color="tab:green", alpha=0.25, lw=0))
        ax.add_patch(Rectangle((1.5 - g, -1.0), g, 2.0, color="tab:purple", alpha=0.25, lw=0))
        ax.add_patch(Circle((0, 0), self.zone1_radius, color="tab:blue", alpha=0.25, lw=0))
        ax.text(0, 0, str(self.zone1), ha="center", va="center")
        ax.text(1.5 - g / 2, 0, str(self.zone2), ha="center", va="center")
        for a in range(self.n_agents):
            ax.text(poses[0, a], poses[1, a] - 0.12, str(self.load[a]), ha="center", fontsize=7)
        return ["tab:cyan"] * 2 + ["tab:brown"] * 2


class ArcticTransport:
    """§6: drones 0-1 see the terrain around them; the ice robot (2) and the water robot (3) must reach the
    goal block in the top rows. Terrain 0 normal, 1 ice, 2 water, 3 goal; speed depends on the terrain."""

    n_agents, obs_size, n_actions, max_episode_steps, ticks, penalty = 4, 30, 5, 60, 36, -30.0
    # step length by [agent, terrain type] (§6.2)
    steps = np.array([[0.3, 0.3, 0.3, 0.3], [0.3, 0.3, 0.3, 0.3], [0.2, 0.3, 0.1, 0.2], [0.2, 0.1, 0.3, 0.2]])
    others = ((1, 2, 3), (0, 2, 3), (3, 0, 1), (2, 0, 1))  # order of the other agents' rows (§6.5)
    start = np.array([[-0.3, 0.3, -0.9, 0.9], [-0.8, -0.8, -0.8, -0.8], [np.pi / 2] * 4])

    def reset(self, rng, py_rng):
        self.grid = rng.randint(3, size=(8, 12))
        # MARBLER draws the goal column from Python's unseeded global `random` (§2.12); a seeded per-env
        # random.Random keeps numpy's stream exactly as MARBLER consumes it (only the column differs)
        goal = py_rng.randint(1, 11)
        self.grid[0:2, goal - 1 : goal + 1] = 3
        self.grid[7, 1:11] = 0
        self.goal = np.array([0.25 * goal - 1.5, 0.5])
        self.cell_type = np.zeros(self.n_agents, int)  # type recorded at the last observation
        self.reached = np.zeros(self.n_agents, bool)
        return self.start.copy()

    def step_lengths(self, moves):
        return self.steps[np.arange(self.n_agents), self.cell_type]  # previous step's terrain (§6.2)

    def cell(self, x, y):
        """§6.3: (row, column), row 0 at the top; positions beyond the grid map to the edge cells."""
        return min(max(-int((y - 1) / 0.25), 0), 7), min(max(int((x + 1.5) / 0.25), 0), 11)

    def neighbourhood(self, r, c):
        """§6.5: the 8 cells around (r, c), column by column; off-grid indices fall back to r or c."""
        rs = [r - 1 if r > 0 else r, r, r + 1 if r < 7 else r]
        cs = [c - 1 if c > 0 else c, c, c + 1 if c < 11 else c]
        return [self.grid[rs[i], cs[j]] for j in range(3) for i in range(3) if (i, j) != (1, 1)]

    def update(self, poses, actions, moves, violation, timeout):
        cells = [self.cell(poses[0, a], poses[1, a]) for a in range(self.n_agents)]
        self.cell_type = np.array([self.grid[rc] for rc in cells])
        self.reached[2:] |= self.cell_type[2:] == 3  # sticky, ground robots only
        rows = [np.array([poses[0, a], poses[1, a], self.cell_type[a]]) for a in range(self.n_agents)]
        tail = np.concatenate([self.goal, self.neighbourhood(*cells[0]), self.neighbourhood(*cells[1])])
        obs = [np.concatenate([rows[a]] + [rows[o] for o in self.others[a]] + [tail]) for a in range(self.n_agents)]
        r = 0.0
        for a in (2, 3):  # §6.6: drones contribute nothing
            if not self.reached[a]:
                r += -0.05
            if self.cell_type[a] != 3:
                dx, dy = poses[0, a] - self.goal[0], poses[1, a] - self.goal[1]
                r += -0.075 * (dx * dx + dy * dy)
        r = self.penalty if violation else r
        return obs, [float(r)] * self.n_agents, bool(self.reached[2:].all()), {}

    def draw(self, ax, poses):
        from matplotlib.colors import ListedColormap

        cmap = ListedColormap(["#f2f2f2", "#bfe6ff", "#3a7bd5", "#ffd54f"])  # normal, ice, water, goal
        ax.imshow(self.grid, cmap=cmap, vmin=0, vmax=3, extent=(-1.5, 1.5, -1.0, 1.0), origin="upper", zorder=0)
        ax.plot(*self.goal, marker="*", ms=12, color="k")
        return ["tab:grey", "tab:grey", "tab:cyan", "tab:blue"]


TASKS = {
    "marbler-arctic": ArcticTransport,
    "marbler-material": MaterialTransport,
    "marbler-pcp": PredatorCapturePrey,
    "marbler-warehouse": Warehouse,
}


class MarblerEnv:
    """One MARBLER task behind the envs/ API. Keywords (defaults replicate MARBLER):

    solver: "cvxopt" (MARBLER's loose-tolerance QP) or "active_set" (exact, faster; §8.6 deviation).
    real_first_obs: if True, reset returns the real observation of the start state instead of zeros (§2.9).
    """

    def __init__(self, name: str, seed: int, solver: str = "cvxopt", real_first_obs: bool = False):
        if name not in TASKS:
            raise ValueError(f"unknown MARBLER task {name!r}; choose one of {', '.join(TASKS)}")
        self.name, self.task = name, TASKS[name]()
        self.n_agents, self.obs_size, self.n_actions = self.task.n_agents, self.task.obs_size, self.task.n_actions
        self.episode_limit = self.task.max_episode_steps + 1  # the time-out ends step max + 1 (§2.8)
        self.sim = Simulator(self.n_agents, solver)
        self.rng = np.random.RandomState(seed)  # same stream as MARBLER's legacy global numpy draws (§2.12)
        self.py_rng = random.Random(seed)  # stands in for Python's global `random` (AT goal column only)
        self.real_first_obs = real_first_obs
        self.poses = None
        self._fig = None

    def reset(self):
        self.poses = self.task.reset(self.rng, self.py_rng)  # (3, n_agents): x, y, theta
        # MARBLER's zero-velocity tick at reset only re-wraps the headings (its violation test is repeated
        # by the first tick of step 1, which starts from the same positions)
        self.poses[2] = np.arctan2(np.sin(self.poses[2]), np.cos(self.poses[2]))
        self.t = 0
        self.carry = np.zeros(self.n_agents)  # last tick's displacement, reported with the next step
        if self.real_first_obs:
            state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(self.task).items()}
            moves = np.full(self.n_agents, 4)
            obs = self.task.update(self.poses, moves, moves, None, False)[0]
            vars(self.task).update(state)  # observing must not change the task state
            return tuple(np.asarray(o, np.float32) for o in obs), {}
        return tuple(np.zeros(self.obs_size, np.float32) for _ in range(self.n_agents)), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.int64).reshape(self.n_agents)
        self.t += 1
        moves = actions // 4 if self.n_actions == 20 else actions  # MT: action = 4 * move + message (§5.2)
        wx, wy = waypoints(self.poses[0], self.poses[1], moves, self.task.step_lengths(moves))
        self.poses, violation, disp = self.sim.run(self.poses, wx, wy, self.task.ticks)
        timeout = self.t > self.task.max_episode_steps
        obs, rewards, success, info = self.task.update(self.poses, actions, moves, violation, timeout)
        # §2.9 dist_travelled: MARBLER counts a step's last tick in the next step, except on a violation
        if violation:
            info["dist_travelled"] = self.carry + disp.sum(axis=0)
            info["message"] = violation
        else:
            info["dist_travelled"] = self.carry + disp[:-1].sum(axis=0)
            self.carry = disp[-1]
        terminated = bool(violation) or success
        truncated = timeout and not terminated  # project decision (§2.8): the time-out is a truncation
        return tuple(np.asarray(o, np.float32) for o in obs), rewards, terminated, truncated, info

    def render(self):
        """RGB frame (H, W, 3) uint8 of the arena, drawn headless with matplotlib's Agg canvas."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Circle

        if self._fig is None:
            self._fig = Figure(figsize=(6.4, 4.0), dpi=100)
            FigureCanvasAgg(self._fig)
        fig = self._fig
        fig.clear()
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(-ARENA_X, ARENA_X)
        ax.set_ylim(-ARENA_Y, ARENA_Y)  # y grows upward; action 2 ("up") moves down in this picture
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.plot([LEFT, RIGHT, RIGHT, LEFT, LEFT], [UP, UP, DOWN, DOWN, UP], ls=":", lw=0.8, color="grey")
        if self.poses is not None:
            colours = self.task.draw(ax, self.poses)
            for a, (x, y, th) in enumerate(self.poses.T):
                ax.add_patch(Circle((x, y), 0.055, color=colours[a], zorder=4))
                ax.plot([x, x + 0.08 * np.cos(th)], [y, y + 0.08 * np.sin(th)], color="k", lw=1.5, zorder=5)
                ax.text(x, y, str(a), ha="center", va="center", fontsize=7, color="w", zorder=6)
        ax.text(-1.55, 0.92, f"{self.name}  t={getattr(self, 't', 0)}", fontsize=8, va="top")
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

    def __getstate__(self):  # a checkpoint keeps the task, not the cached figure
        return {**vars(self), "_fig": None}

    def close(self):
        self._fig = None
