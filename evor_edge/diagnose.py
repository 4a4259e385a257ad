"""Why does a policy fail a task? Actor coverage against critic ranking, measured in the simulator.

`evor-edge diagnose ENGINE_DIR --env TASK` (`evor_edge.diagnose_command`) runs :func:`diagnose`:

1. **Record** `episodes` episodes of the engine's policy (the runtime, deployed settings) on TASK, keeping
   the simulator state (qpos, qvel, the episode's goal) at every step.
2. **Sample states** along them (evenly spaced, or `at_steps`).
3. At each state, draw `num_candidates` action candidates and their Q* exactly as the engine and the
   runtime do (Algorithm 2; for QC engines Q* is the Q head), plus Q* re-estimated on `q_repeats`
   independent reward-to-go draws (same candidates) and pooled over all of them (`q_star_pooled`, a
   large-N Q*: separates finite-N noise from critic bias).
4. **Monte-Carlo return of each candidate**: reset a simulator to the saved state, take the candidate,
   then follow the same engine's policy for `horizon - 1` steps; `rollouts` rollouts per candidate with
   common random numbers (rollout r of every candidate uses the same policy noise: a paired comparison).
   Returns are in the dataset's units (OGBench singletask relabelling, the units the critic learns):

       G = f(s_0) + sum_{t < T} gamma^(t+1) r_t

   with f(s_0) the relabelled reward of the saved state (-1 in a point maze away from the goal), r_t the
   environment's singletask reward of step t (success-timing 'post': f of the next state) and T the step at
   which the episode terminates (success). A rollout that has not succeeded after `horizon` steps is
   completed by its **tail**: "oracle" (point mazes: the noise-free BFS-subgoal expert, i.e. OGBench's
   data-collection oracle without noise, continues from where the rollout stopped; the estimate then means
   "candidate, policy for H steps, then the shortest path") or "repeat" (the last reward forever, -1/(1-gamma)
   in total for a point maze that never arrives: a lower bound). "auto" = oracle where there is one.
5. **Reference actions** (point mazes): the oracle's own action at the state, Monte-Carlo evaluated like a
   candidate ("oracle first, then the policy"), and the oracle's full return from the state (V*: the best
   achievable, up to the oracle's suboptimality).

Per state it reports: Spearman rank correlation of Q* (and of Q*_pooled and of the reward-to-go mean) with
the MC returns; the **regret** of the chosen candidate (MC of the MC-best candidate minus MC of the chosen one:
the critic's ranking loss); the **coverage gap** (MC of the oracle action minus MC of the MC-best candidate:
what no candidate offers, the actor's loss); the angle of each candidate to the oracle direction (is any
candidate heading the right way?); and the **continuation gap** (V* minus the best MC: what the policy loses
after the first step, which no choice of first action repairs). The summary's verdict names the larger of
coverage and ranking loss, if either exceeds the Monte-Carlo noise.

Supported environments: OGBench's MuJoCo environments whose state can be restored (locomaze point / ant /
humanoid mazes and soccer: qpos, qvel, goal; manipspace cube / scene / puzzle: qpos, qvel, mocap targets,
button states). After every restore the observation is compared with the recorded one, and a recorded
transition is replayed once; an environment that does not reproduce them is refused (`DiagnoseError`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

TAILS = ("auto", "oracle", "repeat")


class DiagnoseError(ValueError):
    """Bad input for the diagnosis (one line for the user)."""


@dataclass(frozen=True)
class DiagnoseSettings:
    """Knobs of :func:`diagnose` (defaults sized for a 2-core CPU: a few minutes on a 3x256 engine)."""

    states: int = 4
    at_steps: tuple[int, ...] | None = None
    episodes: int = 1
    max_steps: int | None = None
    num_candidates: int = 16
    num_rtg: int | None = None
    tau_r: float | None = None
    tau_q: float | None = None
    q_repeats: int = 8
    rollouts: int = 2
    horizon: int = 150
    tail: str = "auto"
    follow_num_candidates: int | None = None
    follow_num_rtg: int | None = 8
    oracle_steps: int = 1000
    scan_every: int | None = 25
    discount: float | None = None
    seed: int = 0
    threads: int | None = None

    def check(self) -> None:
        for name in ("states", "episodes", "num_candidates", "q_repeats", "rollouts", "horizon", "oracle_steps"):
            if int(getattr(self, name)) < 1:
                raise DiagnoseError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_rtg", "follow_num_candidates", "follow_num_rtg", "max_steps", "threads", "scan_every"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise DiagnoseError(f"{name} must be >= 1, got {value}")
        if self.tail not in TAILS:
            raise DiagnoseError(f"tail must be one of {TAILS}, got {self.tail!r}")
        if self.at_steps is not None and (not self.at_steps or min(self.at_steps) < 0):
            raise DiagnoseError(f"at_steps must be step indices >= 0, got {self.at_steps}")
        if self.discount is not None and not 0.0 <= self.discount < 1.0:
            raise DiagnoseError(f"discount must be in [0, 1), got {self.discount}")


# ------------------------------------------------------------------------------------------ simulator state
# MuJoCo's mj_step computes the position-dependent quantities (frames, site poses, contact forces) *before* it
# integrates, so after a manipspace env's step they lag qpos by one physics substep. The env reads them before
# its next mj_step: the observation (effector pose, gripper contact) and the IK controller's current effector
# pose (set_control). Recomputing them with mj_forward after a restore moves the effector by ~0.7 mm and the
# next transition by ~1e-2 (cube-double), so a snapshot keeps them and a restore writes them back. mj_step
# recomputes all of them from qpos, so this changes nothing but what the env reads until then.
MANIPSPACE_DERIVED_FIELDS = ("xpos", "xquat", "xmat", "xipos", "ximat", "geom_xpos", "geom_xmat", "site_xpos",
                             "site_xmat", "cfrc_ext", "cfrc_int", "sensordata")


class StateAccess:
    """Save / restore an OGBench MuJoCo environment's full task state, and its relabelled reward."""

    def __init__(self, env: Any, task: str) -> None:
        self.env = env
        self.u = env.unwrapped
        self.task = task
        u = self.u
        if hasattr(u, "cur_goal_xy") and hasattr(u, "set_goal") and hasattr(u, "set_state") and hasattr(u, "data"):
            self.family = "locomaze"
        elif hasattr(u, "_data") and hasattr(u, "set_state") and hasattr(u, "compute_observation"):
            self.family = "manipspace"
        else:
            raise DiagnoseError(f"{task}: this environment cannot be reset to a saved state "
                                f"({type(u).__name__} has no MuJoCo set_state; diagnose supports OGBench's MuJoCo "
                                "locomaze and manipspace environments)")
        if getattr(u, "_reward_task_id", None) is None:
            raise DiagnoseError(f"{task}: not a single-task environment (no task reward to estimate returns with)")

    # -- state
    def snapshot(self) -> dict[str, np.ndarray]:
        u = self.u
        if self.family == "locomaze":
            return {"qpos": u.data.qpos.copy(), "qvel": u.data.qvel.copy(),
                    "goal_xy": np.asarray(u.cur_goal_xy, dtype=np.float64).copy()}
        snap = {"qpos": u._data.qpos.copy(), "qvel": u._data.qvel.copy(),
                "mocap_pos": u._data.mocap_pos.copy(), "mocap_quat": u._data.mocap_quat.copy()}
        snap.update({f"derived/{name}": getattr(u._data, name).copy() for name in MANIPSPACE_DERIVED_FIELDS})
        if hasattr(u, "_cur_button_states"):
            snap["button_states"] = np.asarray(u._cur_button_states).copy()
        return snap

    def restore(self, snap: dict[str, np.ndarray]) -> np.ndarray:
        """Reset (task, time limit) and put the simulator into `snap`; returns the observation there."""
        import mujoco

        u = self.u
        self.env.reset(seed=0)
        if self.family == "locomaze":
            u.set_state(snap["qpos"], snap["qvel"])
            u.set_goal(goal_xy=np.asarray(snap["goal_xy"]))
            return np.asarray(u.get_ob(), dtype=np.float32)
        if "button_states" in snap:
            u.set_state(snap["qpos"], snap["qvel"], snap["button_states"])
        else:
            u.set_state(snap["qpos"], snap["qvel"])
        u._data.mocap_pos[:] = snap["mocap_pos"]
        u._data.mocap_quat[:] = snap["mocap_quat"]
        mujoco.mj_forward(u._model, u._data)
        for name in MANIPSPACE_DERIVED_FIELDS:  # as the env left them after its mj_step (see the constant)
            getattr(u._data, name)[...] = snap[f"derived/{name}"]
        return np.asarray(u.compute_observation(), dtype=np.float32)

    # -- reward in the dataset's units (ogbench.relabel_utils.relabel_dataset)
    def state_reward(self) -> float:
        """f(s): the singletask relabelled reward of the current state (0 = success)."""
        u = self.u
        if self.family == "locomaze":
            return float(u.compute_success()) - 1.0
        return float(u.compute_reward())

    # -- the noise-free oracle (point mazes only)
    @property
    def has_oracle(self) -> bool:
        u = self.u
        return (self.family == "locomaze" and hasattr(u, "get_oracle_subgoal")
                and tuple(u.action_space.shape) == (2,) and not hasattr(u, "get_agent_ball_xy"))

    def oracle_action(self, cache: dict[Any, np.ndarray]) -> np.ndarray:
        """OGBench's data-collection expert without its noise: unit vector to the next BFS cell."""
        u = self.u
        xy = np.asarray(u.get_xy(), dtype=np.float64)
        goal = np.asarray(u.cur_goal_xy, dtype=np.float64)
        key = (u.xy_to_ij(xy), u.xy_to_ij(goal))
        sub = cache.get(key)
        if sub is None:
            sub, _ = u.get_oracle_subgoal(xy, goal)
            cache[key] = sub = np.asarray(sub, dtype=np.float64)
        direction = sub - xy
        return np.clip(direction / (np.linalg.norm(direction) + 1e-6), -1.0, 1.0).astype(np.float32)


# -------------------------------------------------------------------------------------------- statistics
def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties averaged."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation; None when either side is constant (undefined)."""
    ra, rb = rankdata(a), rankdata(b)
    if len(ra) < 2 or np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < 1e-9 or nb < 1e-9:
        return float("nan")
    return float(np.degrees(np.arccos(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))))


def _round(x: Any, nd: int = 4) -> Any:
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, nd)
    if isinstance(x, np.ndarray):
        return [_round(float(v), nd) for v in x.reshape(-1)] if x.ndim <= 1 else [_round(r, nd) for r in x]
    if isinstance(x, (list, tuple)):
        return [_round(v, nd) for v in x]
    return x


# ---------------------------------------------------------------------------------------- engine helpers
class EngineRunner:
    """Calls the engine directly with given noise (the runtime's tick, made for diagnosis)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.backend = policy.backend
        self.kind = policy.kind
        self.act_dim = policy.act_dim

    def run(self, obs: np.ndarray, action_noise: np.ndarray, rtg_noise: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray]:
        """(actions [B, K, act], values): returns [B, K, N] (evor) or q [B, K] (qc); fresh copies."""
        batch, k = action_noise.shape[:2]
        n = rtg_noise.shape[2] if rtg_noise is not None else 1
        io = self.backend.buffers(batch, k, n)
        io.inputs["obs"][...] = obs
        io.inputs["action_noise"][...] = action_noise
        if "rtg_noise" in io.inputs:
            io.inputs["rtg_noise"][...] = rtg_noise
        self.backend.run(io)
        actions = np.array(io.outputs["actions"], dtype=np.float32)
        values = np.array(io.outputs["returns"] if self.kind == "evor" else io.outputs["q"], dtype=np.float64)
        return actions, values

    def q_values(self, values: np.ndarray, tau_r: float) -> np.ndarray:
        from evor_edge.runtime.selection import q_star

        return q_star(values, tau_r) if self.kind == "evor" else values


def _select_shared(q: np.ndarray, tau_q: float, uniforms: np.ndarray) -> np.ndarray:
    """Eq. 40 per row with a given uniform per row (rows of one rollout share it: common random numbers)."""
    if tau_q == 0:
        return np.argmax(q, axis=1)
    if math.isinf(tau_q):
        return np.minimum((uniforms * q.shape[1]).astype(np.int64), q.shape[1] - 1)
    z = (q - q.max(axis=1, keepdims=True)) / tau_q
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    cum = np.cumsum(p, axis=1)
    return np.minimum((cum < uniforms[:, None]).sum(axis=1), q.shape[1] - 1)


# ------------------------------------------------------------------------------------------------ the run
def diagnose(engine_dir: str | Path, task: str, settings: DiagnoseSettings | None = None,
             plot_path: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the diagnosis (module docstring) and return the JSON-able report."""
    from evor_edge.datasets import make_env
    from evor_edge.runtime import EvorPolicy
    from evor_edge.runtime.manifest import load_manifest, prune_spec

    s = settings or DiagnoseSettings()
    s.check()
    started = time.perf_counter()
    manifest = load_manifest(engine_dir)
    probe = make_env(task)
    try:
        env_dims = (int(probe.observation_space.shape[-1]), int(probe.action_space.shape[-1]))
        if (manifest.obs_dim, manifest.act_dim) != env_dims:
            raise DiagnoseError(f"{engine_dir} expects obs/act dims ({manifest.obs_dim}, {manifest.act_dim}) but "
                                f"{task} has {env_dims}")
        access = StateAccess(probe, task)
        _precheck_restore(access, s.seed)
        tail = s.tail
        if tail == "auto":
            tail = "oracle" if access.has_oracle else "repeat"
        if tail == "oracle" and not access.has_oracle:
            raise DiagnoseError(f"--tail oracle: {task} has no oracle here (point mazes only); use --tail repeat")
    except BaseException:
        probe.close()
        raise
    gamma = float(s.discount if s.discount is not None else (manifest.discount or 0.99))
    policy = EvorPolicy.load(engine_dir, seed=s.seed, intra_op_threads=s.threads, tau_r=s.tau_r, tau_q=s.tau_q)
    if prune_spec(manifest) is not None:
        policy.close()
        raise DiagnoseError(f"{engine_dir} is a pruned engine (export --prune): it scores only its survivors; "
                            "diagnose the unpruned engine exported from the same checkpoint")
    try:
        return _diagnose_with(policy, probe, access, engine_dir, task, s, tail, gamma, plot_path, progress, started,
                              make_env)
    finally:
        policy.close()
        probe.close()


def _diagnose_with(policy: Any, probe: Any, access: StateAccess, engine_dir: str | Path, task: str,
                   s: DiagnoseSettings, tail: str, gamma: float, plot_path: str | Path | None, progress: bool,
                   started: float, make_env: Any) -> dict[str, Any]:
    runner = EngineRunner(policy)
    tau_r, tau_q = policy.tau_r, policy.tau_q
    num_rtg = s.num_rtg or policy.num_rtg
    follow_k = s.follow_num_candidates or policy.num_candidates
    follow_n = s.follow_num_rtg or policy.num_rtg
    say = _progress(progress)

    # 1. record episodes with the deployed policy
    limit = s.max_steps or getattr(probe.spec, "max_episode_steps", None) or 1000
    recorded = _record(policy, access, task, s.episodes, s.seed, limit, make_env, say)

    # 2. states to diagnose
    picks = _pick_states(recorded, s)
    if not picks:
        raise DiagnoseError("no state to diagnose: every recorded state is already a success state")

    # 3-5. per state
    rows_per_rollout = s.num_candidates + (1 if access.has_oracle else 0)
    envs = [make_env(task, max_episode_steps=s.horizon + s.oracle_steps + 10)
            for _ in range(rows_per_rollout * s.rollouts)]
    accesses = [StateAccess(e, task) for e in envs]
    check = _restore_check(accesses[0], recorded)
    cache: dict[Any, np.ndarray] = {}
    results = []
    try:
        for number, (ep, step) in enumerate(picks):
            say(f"state {number + 1}/{len(picks)}: episode {ep} step {step}")
            results.append(_diagnose_state(
                recorded[ep], step, runner, accesses, s, tail, gamma, tau_r, tau_q, num_rtg, follow_k, follow_n,
                cache, seed=s.seed + 7919 * (number + 1)))
    finally:
        for env in envs:
            env.close()
    report: dict[str, Any] = {
        "engine_dir": str(engine_dir),
        "task": task,
        "kind": policy.kind,
        "settings": {**asdict(s), "tail": tail, "discount": gamma, "num_rtg": num_rtg, "tau_r": tau_r,
                     "tau_q": tau_q, "follow_num_candidates": follow_k, "follow_num_rtg": follow_n,
                     "deployed_num_candidates": policy.num_candidates, "deployed_num_rtg": policy.num_rtg},
        "episodes": [{"seed": r["seed"], "success": r["success"], "length": r["length"]} for r in recorded],
        "restore_check": check,
        "states": results,
    }
    report["summary"] = summarize(results)
    if access.has_oracle and s.scan_every:
        scan = _scan(recorded, runner, accesses[0], s, tau_r, tau_q, num_rtg, cache, say)
        report["scan"] = {"every": s.scan_every, "states": scan, "summary": summarize_scan(scan)}
        _scan_verdict(report)
    if plot_path:
        report["plot"] = plot_diagnosis(report, plot_path)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _precheck_restore(access: StateAccess, seed: int) -> None:
    """Before any episode: save a state, step, restore, step again; the environment must reproduce both."""
    env = access.env
    np.random.seed(seed)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    for _ in range(3):
        env.step(rng.uniform(np.maximum(low, -1.0), np.minimum(high, 1.0)).astype(np.float32))
    snap = access.snapshot()
    action = rng.uniform(np.maximum(low, -1.0), np.minimum(high, 1.0)).astype(np.float32)
    before = np.asarray(env.unwrapped.get_ob() if access.family == "locomaze" else
                        env.unwrapped.compute_observation(), dtype=np.float32)
    after = np.asarray(env.step(action)[0], dtype=np.float32)
    ob = access.restore(snap)
    again = np.asarray(env.step(action)[0], dtype=np.float32)
    err = max(float(np.max(np.abs(ob - before))), float(np.max(np.abs(again - after))))
    if not err <= 1e-4 * max(1.0, float(np.max(np.abs(before)))):
        raise DiagnoseError(f"{access.task}: the environment cannot be reset to a saved state faithfully (restored "
                            f"state or replayed step differs by {err:.3g})")


def _progress(enabled: bool) -> Any:
    import sys

    def say(message: str) -> None:
        if enabled and sys.stderr.isatty():
            print(f"diagnose: {message}", file=sys.stderr, flush=True)

    return say


def _record(policy: Any, access: StateAccess, task: str, episodes: int, seed: int, limit: int, make_env: Any,
            say: Any) -> list[dict[str, Any]]:
    """Run `episodes` episodes (all at once, one policy call per tick), keeping every state."""
    envs = [make_env(task) for _ in range(episodes)]
    acc = [StateAccess(e, task) for e in envs]
    recs: list[dict[str, Any]] = []
    obs = []
    for i, env in enumerate(envs):
        np.random.seed(seed + i)  # OGBench's mazes draw start / goal noise from numpy's global RNG
        ob, _ = env.reset(seed=seed + i)
        obs.append(np.asarray(ob, dtype=np.float32))
        recs.append({"seed": seed + i, "obs": [obs[-1].copy()], "snap": [acc[i].snapshot()],
                     "reward": [acc[i].state_reward()], "actions": [], "success": False, "length": limit})
    obs_b = np.stack(obs)
    active = np.ones(episodes, dtype=bool)
    policy.reset(seed=seed)
    for t in range(limit):
        idx = np.flatnonzero(active)
        actions = policy.act_batch(obs_b[idx])
        for row, k in enumerate(idx):
            ob, _r, terminated, truncated, info = envs[k].step(actions[row])
            rec = recs[k]
            rec["actions"].append(np.asarray(actions[row], dtype=np.float32))
            obs_b[k] = ob
            if info.get("success", False):
                rec["success"] = True
            if terminated or truncated:
                active[k] = False
                rec["length"] = t + 1
            else:
                rec["obs"].append(np.asarray(ob, dtype=np.float32))
                rec["snap"].append(acc[k].snapshot())
                rec["reward"].append(acc[k].state_reward())
        if (t + 1) % 100 == 0:
            say(f"recording: step {t + 1}/{limit}, {int(active.sum())} episode(s) running")
        if not active.any():
            break
    for env in envs:
        env.close()
    return recs


def _pick_states(recorded: list[dict[str, Any]], s: DiagnoseSettings) -> list[tuple[int, int]]:
    """(episode, step) pairs: `at_steps` in every episode, else `states` evenly spaced over all episodes."""
    candidates = [(e, t) for e, rec in enumerate(recorded) for t in range(len(rec["obs"])) if rec["reward"][t] != 0.0]
    if s.at_steps is not None:
        picks = []
        for e, rec in enumerate(recorded):
            for t in s.at_steps:
                if t >= len(rec["obs"]):
                    raise DiagnoseError(f"--at-steps {t}: episode {e} (seed {rec['seed']}) has only "
                                        f"{len(rec['obs'])} non-terminal states")
                if rec["reward"][t] == 0.0:
                    raise DiagnoseError(f"--at-steps {t}: episode {e} is already at the goal there")
                picks.append((e, t))
        return picks
    if not candidates:
        return []
    k = min(s.states, len(candidates))
    where = np.unique(np.round(np.linspace(0, len(candidates) - 1, k)).astype(int))
    return [candidates[i] for i in where]


def _restore_check(access: StateAccess, recorded: list[dict[str, Any]]) -> dict[str, Any]:
    """Restore recorded states and replay recorded actions; refuse a simulator that does not reproduce them."""
    rec = recorded[0]
    steps = sorted({0, len(rec["actions"]) // 2, max(0, len(rec["obs"]) - 2)})
    obs_err, next_err = 0.0, 0.0
    for t in steps:
        ob = access.restore(rec["snap"][t])
        obs_err = max(obs_err, float(np.max(np.abs(ob - rec["obs"][t]))))
        if t + 1 < len(rec["obs"]) and t < len(rec["actions"]):
            nxt, *_ = access.env.step(rec["actions"][t])
            next_err = max(next_err, float(np.max(np.abs(np.asarray(nxt, dtype=np.float32) - rec["obs"][t + 1]))))
    scale = max(1.0, float(np.max(np.abs(np.stack(rec["obs"])))))
    tol = 1e-4 * scale
    if obs_err > tol or next_err > tol:
        raise DiagnoseError(f"{access.task}: the environment cannot be reset to a saved state faithfully (restored "
                            f"observation error {obs_err:.3g}, replayed transition error {next_err:.3g}, tolerance "
                            f"{tol:.3g})")
    return {"states_checked": len(steps), "max_obs_error": obs_err, "max_transition_error": next_err}


def _diagnose_state(rec: dict[str, Any], step: int, runner: EngineRunner, accesses: list[StateAccess],
                    s: DiagnoseSettings, tail: str, gamma: float, tau_r: float, tau_q: float, num_rtg: int,
                    follow_k: int, follow_n: int, cache: dict[Any, np.ndarray], seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    obs = rec["obs"][step][None, :]
    snap = rec["snap"][step]
    k, act_dim = s.num_candidates, runner.act_dim
    evor = runner.kind == "evor"

    # candidates and Q* exactly as a runtime tick draws them (action noise, then rtg noise, then selection)
    action_noise = rng.standard_normal((1, k, act_dim), dtype=np.float32)
    rtg_noise = rng.standard_normal((1, k, num_rtg), dtype=np.float32) if evor else None
    cand, values = runner.run(obs, action_noise, rtg_noise)
    q = runner.q_values(values, tau_r)[0]
    chosen = int(_select_shared(q[None, :], tau_q, rng.random(1))[0])
    cand = cand[0]
    out: dict[str, Any] = {"episode_seed": rec["seed"], "step": step, "obs": _round(rec["obs"][step]),
                           "num_candidates": int(cand.shape[0])}
    repeats = []
    pooled = None
    if evor:
        returns = [values[0]]
        for _ in range(s.q_repeats):
            extra = rng.standard_normal((1, k, num_rtg), dtype=np.float32)
            _, vals = runner.run(obs, action_noise, extra)
            returns.append(vals[0])
            repeats.append(runner.q_values(vals, tau_r)[0])
        all_returns = np.concatenate(returns, axis=1)
        pooled = runner.q_values(all_returns[None], tau_r)[0]
        rtg_mean = all_returns.mean(axis=1)
    cand_k = int(cand.shape[0])

    # first actions: the candidates, then (point mazes) the oracle's own action
    access0 = accesses[0]
    access0.restore(snap)
    f0 = access0.state_reward()
    oracle_dir = access0.oracle_action(cache) if access0.has_oracle else None
    firsts = [cand[i] for i in range(cand_k)] + ([oracle_dir] if oracle_dir is not None else [])
    rows_per = len(firsts)
    mc, succ_steps = _monte_carlo(firsts, snap, f0, runner, accesses[:rows_per * s.rollouts], s, tail, gamma, tau_r,
                                  tau_q, follow_k, follow_n, cache, rng)
    mc_mean, mc_std = mc.mean(axis=1), mc.std(axis=1)
    cand_mc = mc_mean[:cand_k]
    best = int(np.argmax(cand_mc))
    # paired (common random numbers) standard error of a difference between two candidates
    diffs = mc[:cand_k] - mc[best][None, :]
    se = float(np.sqrt(np.mean(diffs.var(axis=1, ddof=1) / s.rollouts))) if s.rollouts > 1 else float("nan")

    out.update({
        "chosen": chosen,
        "mc_best": best,
        "f_s0": f0,
        "q_star": _round(q),
        "mc_mean": _round(cand_mc),
        "mc_std": _round(mc_std[:cand_k]),
        "mc_rollouts": _round(mc[:cand_k], 3),
        "mc_success_rate": _round(np.mean(succ_steps[:cand_k] >= 0, axis=1)),
        "candidates": _round(cand),
        "spearman_q_star_mc": spearman(q, cand_mc),
        "regret": float(cand_mc[best] - cand_mc[chosen]),
        "regret_of_q_star_argmax": float(cand_mc[best] - cand_mc[int(np.argmax(q))]),
        "mc_spread": float(cand_mc.max() - cand_mc.min()),
        "mc_pair_se": se,
        "q_star_chosen": float(q[chosen]),
        "mc_chosen": float(cand_mc[chosen]),
    })
    if evor:
        single = [int(np.argmax(r)) for r in repeats] + [int(np.argmax(q))]
        out.update({
            "q_star_pooled": _round(pooled),
            "rtg_mean": _round(rtg_mean),
            "pooled_num_rtg": int(all_returns.shape[1]),
            "spearman_q_star_pooled_mc": spearman(pooled, cand_mc),
            "spearman_rtg_mean_mc": spearman(rtg_mean, cand_mc),
            "regret_of_pooled_argmax": float(cand_mc[best] - cand_mc[int(np.argmax(pooled))]),
            "q_star_noise_std": float(np.mean(np.std(np.stack(repeats + [q]), axis=0))),
            "argmax_agreement_with_pooled": float(np.mean(np.array(single) == int(np.argmax(pooled)))),
            "spearman_q_star_pooled": spearman(q, pooled),
        })
    if oracle_dir is not None:
        out.update(_decision_costs(access0, snap, cand, q, chosen, s.oracle_steps, cache))
        if evor and out.get("steps_lost_chosen") is not None:  # the same ranking by the pooled Q* and the mean
            neg_steps = -np.array(out["oracle_continuation_steps"], dtype=np.float64)
            out["spearman_q_star_pooled_oracle_continuation"] = spearman(pooled, neg_steps)
            out["spearman_rtg_mean_oracle_continuation"] = spearman(rtg_mean, neg_steps)
        oracle_mc = float(mc_mean[cand_k])
        v_star = _oracle_value(access0, snap, gamma, s.oracle_steps, cache)
        angles = np.array([_angle_deg(c, oracle_dir) for c in cand])
        out.update({
            "oracle_action": _round(oracle_dir),
            "mc_oracle_first": oracle_mc,
            "v_star": v_star,
            "coverage_gap": float(max(0.0, oracle_mc - cand_mc[best])),
            "continuation_gap": float(v_star - max(oracle_mc, float(cand_mc[best]))),
            "angle_to_oracle_deg": _round(angles, 1),
            "min_angle_to_oracle_deg": float(np.nanmin(angles)),
            "chosen_angle_to_oracle_deg": float(angles[chosen]),
            "mc_best_angle_to_oracle_deg": float(angles[best]),
            "spearman_q_star_neg_angle": spearman(q, -angles),
        })
    else:
        out.update({"coverage_gap": None, "continuation_gap": None, "v_star": None})
    return out


def _monte_carlo(firsts: list[np.ndarray], snap: dict[str, np.ndarray], f0: float, runner: EngineRunner,
                 accesses: list[StateAccess], s: DiagnoseSettings, tail: str, gamma: float, tau_r: float,
                 tau_q: float, follow_k: int, follow_n: int, cache: dict[Any, np.ndarray],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns G [len(firsts), rollouts] and the success step (-1: none within the horizon) of each rollout."""
    n_first, rollouts = len(firsts), s.rollouts
    rows = n_first * rollouts  # row = r * n_first + i
    rollout_of = np.repeat(np.arange(rollouts), n_first)
    obs = np.stack([a.restore(snap) for a in accesses[:rows]])
    ret = np.full(rows, f0, dtype=np.float64)
    disc = np.full(rows, gamma, dtype=np.float64)  # gamma^(t+1) for the reward of step t
    done = np.zeros(rows, dtype=bool)
    success_step = np.full(rows, -1, dtype=np.int64)
    last_reward = np.full(rows, f0, dtype=np.float64)
    first = np.stack([firsts[i % n_first] for i in range(rows)]).astype(np.float32)
    evor = runner.kind == "evor"
    streams = [np.random.default_rng(rng.integers(2**63)) for _ in range(rollouts)]
    for t in range(s.horizon):
        if t == 0:
            actions = first
        else:
            noise_a = np.empty((rows, follow_k, runner.act_dim), dtype=np.float32)
            noise_z = np.empty((rows, follow_k, follow_n), dtype=np.float32) if evor else None
            uniforms = np.empty(rows)
            for r, stream in enumerate(streams):  # common random numbers: one draw per rollout
                sel = rollout_of == r
                noise_a[sel] = stream.standard_normal((1, follow_k, runner.act_dim), dtype=np.float32)
                if evor:
                    noise_z[sel] = stream.standard_normal((1, follow_k, follow_n), dtype=np.float32)
                uniforms[sel] = stream.random()
            cand, values = runner.run(obs, noise_a, noise_z)
            idx = _select_shared(runner.q_values(values, tau_r), tau_q, uniforms)
            actions = cand[np.arange(rows), idx]
        for i in np.flatnonzero(~done):
            ob, reward, terminated, truncated, info = accesses[i].env.step(actions[i])
            obs[i] = ob
            ret[i] += disc[i] * float(reward)
            last_reward[i] = float(reward)
            disc[i] *= gamma
            if info.get("success", False) and terminated:
                success_step[i] = t + 1
            if terminated or truncated:
                done[i] = True
        if done.all():
            break
    for i in np.flatnonzero(~done):  # tails
        if tail == "oracle":
            more, d, last = _follow_oracle(accesses[i], gamma, s.oracle_steps, cache)
            ret[i] += disc[i] * more
            disc[i] *= d
            if last is None:
                continue
            last_reward[i] = last
        ret[i] += disc[i] * last_reward[i] / (1.0 - gamma)  # the last reward forever
    return ret.reshape(rollouts, n_first).T, success_step.reshape(rollouts, n_first).T


def _follow_oracle(access: StateAccess, gamma: float, steps: int, cache: dict[Any, np.ndarray]
                   ) -> tuple[float, float, float | None]:
    """Step the noise-free oracle from the current state: (discounted rewards, gamma^steps taken, last reward
    or None if it reached the goal)."""
    total, disc = 0.0, 1.0
    last = None
    for _ in range(steps):
        _ob, reward, terminated, truncated, info = access.env.step(access.oracle_action(cache))
        total += disc * float(reward)
        disc *= gamma
        last = float(reward)
        if terminated:
            return total, disc, None
        if truncated:
            break
    return total, disc, last


def oracle_continuation_steps(access: StateAccess, snap: dict[str, np.ndarray], first: np.ndarray | None,
                              limit: int, cache: dict[Any, np.ndarray]) -> int | None:
    """Steps to the goal when `first` is taken at the saved state and the noise-free oracle acts from then on
    (`first` None: the oracle from the start, d*). None if the goal is not reached within `limit` steps.
    Deterministic in a point maze: a decision's cost without Monte-Carlo noise."""
    access.restore(snap)
    steps = 0
    if first is not None:
        _ob, _r, terminated, _t, _info = access.env.step(first)
        steps = 1
        if terminated:
            return steps
    for _ in range(limit):
        _ob, _r, terminated, truncated, _info = access.env.step(access.oracle_action(cache))
        steps += 1
        if terminated:
            return steps
        if truncated:
            return None
    return None


def _decision_costs(access: StateAccess, snap: dict[str, np.ndarray], cand: np.ndarray, q: np.ndarray,
                    chosen: int, limit: int, cache: dict[Any, np.ndarray]) -> dict[str, Any]:
    """Each candidate's cost in oracle steps (candidate, then the oracle) against the oracle's own d*:
    steps_lost_chosen = ranking loss, steps_lost_best = coverage loss (both in steps of the goal's distance)."""
    d_star = oracle_continuation_steps(access, snap, None, limit, cache)
    steps = [oracle_continuation_steps(access, snap, c, limit, cache) for c in cand]
    if d_star is None or any(x is None for x in steps):
        return {"d_star": d_star, "oracle_continuation_steps": steps, "steps_lost_chosen": None,
                "steps_lost_best": None}
    arr = np.array(steps, dtype=np.float64)
    return {
        "d_star": int(d_star),
        "oracle_continuation_steps": [int(x) for x in steps],
        "steps_lost_chosen": float(arr[chosen] - arr.min()),   # ranking: a better candidate was there
        "steps_lost_best": float(arr.min() - d_star),          # coverage: no candidate as good as the oracle
        "steps_lost_total": float(arr[chosen] - d_star),
        "spearman_q_star_oracle_continuation": spearman(q, -arr),
    }


def _scan(recorded: list[dict[str, Any]], runner: EngineRunner, access: StateAccess, s: DiagnoseSettings,
          tau_r: float, tau_q: float, num_rtg: int, cache: dict[Any, np.ndarray], say: Any) -> list[dict[str, Any]]:
    """Every `scan_every`-th recorded state: one tick's candidates and choice, each costed with the oracle."""
    rows = []
    rng = np.random.default_rng(s.seed + 104729)
    evor = runner.kind == "evor"
    for e, rec in enumerate(recorded):
        for t in range(0, len(rec["obs"]), int(s.scan_every or 1)):
            if rec["reward"][t] == 0.0:
                continue
            obs = rec["obs"][t][None, :]
            noise_a = rng.standard_normal((1, s.num_candidates, runner.act_dim), dtype=np.float32)
            noise_z = rng.standard_normal((1, s.num_candidates, num_rtg), dtype=np.float32) if evor else None
            cand, values = runner.run(obs, noise_a, noise_z)
            q = runner.q_values(values, tau_r)[0]
            chosen = int(_select_shared(q[None, :], tau_q, rng.random(1))[0])
            costs = _decision_costs(access, rec["snap"][t], cand[0], q, chosen, s.oracle_steps, cache)
            access.restore(rec["snap"][t])
            oracle_dir = access.oracle_action(cache)
            angles = np.array([_angle_deg(c, oracle_dir) for c in cand[0]])
            rows.append({"episode": e, "step": t, **costs, "chosen_angle_to_oracle_deg": float(angles[chosen]),
                         "min_angle_to_oracle_deg": float(np.nanmin(angles))})
        say(f"scan: episode {e} done ({len(rows)} states)")
    return rows


def summarize_scan(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean steps lost per decision, split into coverage (best candidate vs oracle) and ranking (chosen vs best)."""
    ok = [r for r in rows if r.get("steps_lost_chosen") is not None]
    if not ok:
        return {"states": len(rows), "costed_states": 0}
    rank = np.array([r["steps_lost_chosen"] for r in ok])
    cov = np.array([r["steps_lost_best"] for r in ok])
    rhos = [r["spearman_q_star_oracle_continuation"] for r in ok
            if r["spearman_q_star_oracle_continuation"] is not None]
    total = rank + cov
    if total.mean() < 0.25:
        verdict = "neither"
    elif rank.mean() >= cov.mean():
        verdict = "ranking"
    else:
        verdict = "coverage"
    return {
        "states": len(rows),
        "costed_states": len(ok),
        "mean_steps_lost_per_decision": float(total.mean()),
        "mean_steps_lost_ranking": float(rank.mean()),
        "mean_steps_lost_coverage": float(cov.mean()),
        "fraction_chosen_not_best": float(np.mean(rank > 0)),
        "fraction_decisions_without_progress": float(np.mean(total >= 1.0)),
        "median_spearman_q_star_oracle_continuation": float(np.median(rhos)) if rhos else None,
        "mean_min_angle_to_oracle_deg": float(np.mean([r["min_angle_to_oracle_deg"] for r in ok])),
        "mean_chosen_angle_to_oracle_deg": float(np.mean([r["chosen_angle_to_oracle_deg"] for r in ok])),
        "verdict": verdict,
    }


def _oracle_value(access: StateAccess, snap: dict[str, np.ndarray], gamma: float, steps: int,
                  cache: dict[Any, np.ndarray]) -> float:
    """V*: the oracle's return from the state, in the dataset's units."""
    access.restore(snap)
    f0 = access.state_reward()
    more, disc, last = _follow_oracle(access, gamma, steps, cache)
    value = f0 + gamma * more
    if last is not None:
        value += gamma * disc * last / (1.0 - gamma)
    return float(value)


# -------------------------------------------------------------------------------------------------- summary
def state_floor(st: dict[str, Any]) -> float:
    """The smallest loss called significant at a state: one step's reward (1), or two standard errors of a
    paired candidate difference when the Monte-Carlo noise is larger."""
    se = st.get("mc_pair_se")
    return max(1.0, 2.0 * se) if se is not None and math.isfinite(se) else 1.0


def summarize(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate over states and name the larger loss (coverage or ranking), counting at each state only a
    loss above that state's Monte-Carlo noise floor (:func:`state_floor`)."""
    def mean(key: str) -> float | None:
        vals = [st[key] for st in states if st.get(key) is not None and math.isfinite(st[key])]
        return float(np.mean(vals)) if vals else None

    def median(key: str) -> float | None:
        vals = [st[key] for st in states if st.get(key) is not None]
        return float(np.median(vals)) if vals else None

    def significant(key: str) -> tuple[int, float]:
        vals = [st[key] for st in states if st.get(key) is not None and st[key] >= state_floor(st)]
        return len(vals), float(np.sum(vals)) if vals else 0.0

    informative = [st for st in states if st.get("mc_spread") is not None and st["mc_spread"] >= state_floor(st)]

    def median_informative(key: str) -> float | None:
        vals = [st[key] for st in informative if st.get(key) is not None]
        return float(np.median(vals)) if vals else None

    n_rank, rank_loss = significant("regret")
    n_cov, cov_loss = significant("coverage_gap")
    n_cont, cont_loss = significant("continuation_gap")
    n = max(1, len(states))
    summary: dict[str, Any] = {
        "states": len(states),
        "median_spearman_q_star_mc": median("spearman_q_star_mc"),
        "median_spearman_q_star_pooled_mc": median("spearman_q_star_pooled_mc"),
        "median_spearman_rtg_mean_mc": median("spearman_rtg_mean_mc"),
        # point mazes: against -(oracle steps to the goal after each candidate), noise-free
        "median_spearman_q_star_oracle_continuation": median("spearman_q_star_oracle_continuation"),
        "median_spearman_q_star_pooled_oracle_continuation": median("spearman_q_star_pooled_oracle_continuation"),
        "median_spearman_rtg_mean_oracle_continuation": median("spearman_rtg_mean_oracle_continuation"),
        # where the first action matters (MC spread over the candidates above the noise floor); elsewhere a rank
        # correlation measures noise
        "informative_states": len(informative),
        "median_spearman_q_star_mc_informative": median_informative("spearman_q_star_mc"),
        "median_spearman_q_star_pooled_mc_informative": median_informative("spearman_q_star_pooled_mc"),
        "median_spearman_rtg_mean_mc_informative": median_informative("spearman_rtg_mean_mc"),
        "mean_regret": mean("regret"),
        "mean_regret_of_pooled_argmax": mean("regret_of_pooled_argmax"),
        "mean_coverage_gap": mean("coverage_gap"),
        "mean_continuation_gap": mean("continuation_gap"),
        "mean_mc_spread": mean("mc_spread"),
        "mean_argmax_agreement_with_pooled": mean("argmax_agreement_with_pooled"),
        "mean_min_angle_to_oracle_deg": mean("min_angle_to_oracle_deg"),
        "mean_chosen_angle_to_oracle_deg": mean("chosen_angle_to_oracle_deg"),
        "states_with_ranking_loss": n_rank,
        "states_with_coverage_loss": n_cov,
        "states_with_continuation_loss": n_cont,
        "ranking_loss_per_state": rank_loss / n,
        "coverage_loss_per_state": cov_loss / n,
        "continuation_loss_per_state": cont_loss / n,
        "noise_floors": [state_floor(st) for st in states],
    }
    if n_rank == 0 and n_cov == 0:
        verdict = "neither"
        why = ("at every state the chosen candidate is within the noise floor of the best candidate, and the best "
               "candidate within it of the oracle action")
    elif rank_loss >= cov_loss:
        verdict = "ranking"
        why = (f"a better candidate was among the N_pi samples but Q* did not pick it at {n_rank} of {len(states)} "
               f"states (ranking loss {rank_loss / n:.2f} per state against a coverage loss of {cov_loss / n:.2f})")
    else:
        verdict = "coverage"
        why = (f"no candidate was as good as the oracle action at {n_cov} of {len(states)} states (coverage loss "
               f"{cov_loss / n:.2f} per state against a ranking loss of {rank_loss / n:.2f})")
    if n_cont and cont_loss > max(rank_loss, cov_loss):
        why += (f"; the largest loss comes after the first step: continuation gap {cont_loss / n:.2f} per state "
                f"({n_cont} states), the policy's own continuation falls short of the oracle's from every first "
                "action")
    summary.update({"verdict": verdict, "explanation": why})
    return summary


def _scan_verdict(report: dict[str, Any]) -> None:
    """Where the oracle costs every decision exactly, its split of the steps lost is the verdict."""
    sc = report["scan"]["summary"]
    if not sc.get("costed_states"):
        return
    sm = report["summary"]
    sm["mc_verdict"] = sm["verdict"]
    sm["verdict"] = sc["verdict"]
    sm["explanation"] = (
        f"over {sc['costed_states']} decisions along the recorded episodes (every {report['scan']['every']}th "
        f"state), the chosen candidate costs {sc['mean_steps_lost_per_decision']:.2f} oracle steps more than the "
        f"oracle's own action: {sc['mean_steps_lost_ranking']:.2f} of them because Q* did not pick the best "
        f"candidate (ranking; {100 * sc['fraction_chosen_not_best']:.0f}% of decisions) and "
        f"{sc['mean_steps_lost_coverage']:.2f} because no candidate was as good as the oracle (coverage); "
        f"{100 * sc['fraction_decisions_without_progress']:.0f}% of decisions make no net progress. "
        f"Monte-Carlo with the policy's own continuation (at {sm['states']} states): {sm['mc_verdict']}; "
        + sm["explanation"])


def human_summary(report: dict[str, Any]) -> str:
    sm = report["summary"]
    lines = [f"{report['task']}: {report['kind']} engine {report['engine_dir']}; recorded episodes "
             + ", ".join(f"seed {e['seed']} {'success' if e['success'] else 'failure'} ({e['length']} steps)"
                         for e in report["episodes"])]

    def fmt(x: Any, nd: int = 2) -> str:
        return "n/a" if x is None else f"{x:.{nd}f}"

    for st in report["states"]:
        line = (f"  step {st['step']:4d}{'*' if st['mc_spread'] >= state_floor(st) else ' '}: "
                f"spearman(Q*, MC) {fmt(st['spearman_q_star_mc'])}"
                + (f", pooled {fmt(st.get('spearman_q_star_pooled_mc'))}" if "q_star_pooled" in st else "")
                + f"; regret {st['regret']:.2f}; MC best {max(st['mc_mean']):.2f}, chosen {st['mc_chosen']:.2f}")
        if st.get("steps_lost_chosen") is not None:
            line += (f"; oracle-costed steps lost: chosen {st['steps_lost_chosen']:.1f} (ranking), best "
                     f"{st['steps_lost_best']:.1f} (coverage)")
        if st.get("coverage_gap") is not None:
            line += (f"; oracle-first {st['mc_oracle_first']:.2f}, V* {st['v_star']:.2f}; coverage gap "
                     f"{st['coverage_gap']:.2f}; min angle to oracle {st['min_angle_to_oracle_deg']:.0f} deg "
                     f"(chosen {st['chosen_angle_to_oracle_deg']:.0f})")
        lines.append(line)
    lines.append(f"first action matters (MC spread above the noise floor) at {sm['informative_states']} of "
                 f"{sm['states']} states; there median spearman(Q*, MC) "
                 f"{fmt(sm['median_spearman_q_star_mc_informative'])}, pooled Q* "
                 f"{fmt(sm['median_spearman_q_star_pooled_mc_informative'])}, reward-to-go mean "
                 f"{fmt(sm['median_spearman_rtg_mean_mc_informative'])}"
                 + (f"; single-draw Q* argmax = pooled argmax in {100 * sm['mean_argmax_agreement_with_pooled']:.0f}%"
                    if sm.get("mean_argmax_agreement_with_pooled") is not None else ""))
    if sm.get("median_spearman_rtg_mean_oracle_continuation") is not None:
        lines.append(f"at these states, median spearman with -(oracle steps after each candidate): Q* "
                     f"{fmt(sm['median_spearman_q_star_oracle_continuation'])}, pooled Q* "
                     f"{fmt(sm['median_spearman_q_star_pooled_oracle_continuation'])}, reward-to-go mean "
                     f"{fmt(sm['median_spearman_rtg_mean_oracle_continuation'])}")
    sc = (report.get("scan") or {}).get("summary") or {}
    if sc.get("costed_states"):
        lines.append(f"scan ({sc['costed_states']} decisions, every {report['scan']['every']}th state): steps lost per "
                     f"decision {sc['mean_steps_lost_per_decision']:.2f} = ranking {sc['mean_steps_lost_ranking']:.2f}"
                     f" + coverage {sc['mean_steps_lost_coverage']:.2f}; median spearman(Q*, -oracle steps) "
                     f"{fmt(sc['median_spearman_q_star_oracle_continuation'])}; angle to oracle: best candidate "
                     f"{sc['mean_min_angle_to_oracle_deg']:.0f} deg, chosen {sc['mean_chosen_angle_to_oracle_deg']:.0f}"
                     " deg")
    lines.append(f"verdict: {sm['verdict']} ({sm['explanation']})")
    if report.get("plot"):
        lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)


def plot_diagnosis(report: dict[str, Any], path: str | Path) -> str:
    """One panel per state: Q* (x) against the Monte-Carlo return (y) of every candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    states = report["states"]
    cols = min(4, len(states))
    rows = (len(states) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax, st in zip(axes.reshape(-1), states, strict=False):
        q, mc = np.array(st["q_star"], dtype=float), np.array(st["mc_mean"], dtype=float)
        ax.scatter(q, mc, s=14, label="candidates")
        ax.scatter([q[st["chosen"]]], [mc[st["chosen"]]], s=60, facecolors="none", edgecolors="red",
                   label="chosen")
        if st.get("mc_oracle_first") is not None:
            ax.axhline(st["mc_oracle_first"], color="green", lw=1, ls="--", label="oracle action")
            ax.axhline(st["v_star"], color="black", lw=1, ls=":", label="V* (oracle)")
        rho = st["spearman_q_star_mc"]
        title = f"step {st['step']}: rho(Q*, MC) {'n/a' if rho is None else f'{rho:.2f}'}"
        if st.get("oracle_continuation_steps") and None not in st["oracle_continuation_steps"]:
            twin = ax.twinx()
            twin.scatter(q, st["oracle_continuation_steps"], marker="x", s=16, color="tab:orange",
                         label="steps to goal (candidate, then oracle)")
            twin.axhline(st["d_star"], color="tab:orange", lw=0.8, ls=":")
            twin.set_ylabel("steps to goal, oracle after", fontsize=7, color="tab:orange")
            twin.tick_params(labelsize=6, colors="tab:orange")
            twin.invert_yaxis()  # fewer steps = better, upwards like the returns
            rho_o = st.get("spearman_q_star_oracle_continuation")
            title += f", (Q*, -steps) {'n/a' if rho_o is None else f'{rho_o:.2f}'}"
            if ax is axes[0, 0]:
                twin.legend(fontsize=6, loc="lower left")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("Q*", fontsize=8)
        ax.set_ylabel("MC return", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.reshape(-1)[len(states):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"{Path(report['engine_dir']).name} on {report['task']}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
