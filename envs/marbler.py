"""MARBLER Robotarium tasks (Arctic Transport, Material Transport, Predator Capture Prey, Warehouse).

A clean-room re-implementation of the rules in docs/marbler-simulator.md ("§" below cites its sections), behind the
API of envs/__init__.py.
The tasks run on the Robotarium simulator core of envs/robotarium.py; each only defines spawns, step lengths,
observations, rewards and termination.

Replicated quirks (§10): reset returns all-zero observations, "up" (action 2) decreases y, Warehouse/MT
observations show load flags one step late, the controller is refreshed every 15 ticks, cvxopt runs with
MARBLER's loose tolerances. Deviation (§2.8, project decision): the time-out is reported as truncated.
"""

import random

import numpy as np

from envs.robotarium import ARENA_X, ARENA_Y, DOWN, LEFT, RIGHT, UP, Simulator, grid_spawn, waypoints  # noqa: F401


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

    solver: "cvxopt" (MARBLER's loose-tolerance QP) or "daqp" (the same QP solved exactly, faster; §8.6 deviation).
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
