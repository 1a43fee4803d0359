"""The Robotarium simulator core that MARBLER's tasks run on, in numpy (docs/marbler-simulator.md; "§" cites it).

Discrete action -> waypoint (§2.3); go-to-point controller, barrier-certificate QP and unicycle mapping (§2.4); Euler
ticks (§2.5) with a violation test before each tick (§2.6, §2.7); and the grid spawn sampler (§2.12). The QP is solved
by cvxopt with MARBLER's loose tolerances (the faithful path) or exactly by DAQP (faster; §8.6, a deviation). The four
tasks and the env class are in envs/marbler.py.
"""

import daqp
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
SOLVERS = ("cvxopt", "daqp")  # MARBLER's barrier QP as MARBLER solves it; the same QP solved exactly (§8.6 deviation)


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
    `solver="cvxopt"` reproduces MARBLER (loose tolerances, whatever iterate cvxopt returns); `"daqp"` solves it
    exactly with DAQP (a maintained dual active-set solver, MIT), about 50x cheaper per QP, and changes
    near-collision trajectories (§8.6). DAQP falls back to cvxopt on an infeasible QP or an error.
    """

    def __init__(self, n, solver="cvxopt"):
        if solver not in SOLVERS:
            raise ValueError(f"unknown barrier QP solver {solver!r}; use one of {', '.join(SOLVERS)}")
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
        u = self.solve(self.A, b, u0)
        return u[0::2], u[1::2]

    def solve(self, A, b, u0):
        """argmin |u - u0|^2 s.t. A u <= b."""
        if self.solver == "daqp":
            u = exact_qp(A, b, u0)
            if u is not None:
                return u
        return np.array(solvers.qp(self.P, matrix(-2 * u0), matrix(A), matrix(b), options=CVXOPT_OPTIONS)["x"])[:, 0]


def exact_qp(A, b, u0):
    """The exact minimiser of |u - u0|^2 s.t. A u <= b by DAQP, or None if DAQP finds no solution (or fails).
    Most controller updates need no barrier: then u0 itself is feasible, hence optimal, and is returned as is."""
    if np.all(A @ u0 <= b):
        return u0
    try:
        u, _, exitflag, _ = daqp.solve(np.eye(len(u0)), -u0, A, b, np.full(len(b), -1e30), np.zeros(len(b), np.int32))
    except Exception:  # noqa: BLE001  (a solver error takes the cvxopt path, as an infeasible QP does)
        return None
    return u if exitflag > 0 else None


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
