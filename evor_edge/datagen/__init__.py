"""Generate OGBench-format datasets locally, with OGBench's own recipe for each dataset.

OGBench's download server is out of reach here, so this module makes the files itself, the
way OGBench's ``data_gen_scripts`` do (repository seohongpark/ogbench, commit
``1d4140997f60c52c6fb0702ec100dc988b18c548``; its ``ogbench/`` Python files are identical to
the ogbench 1.2.2 wheel this project installs). Line numbers below refer to that commit.

**Recipes.** :data:`RECIPES` holds one :class:`Recipe` per dataset: the flags of its official
command in ``data_gen_scripts/commands.sh`` plus the script's own defaults for the flags that
command leaves out. :func:`generate_dataset` uses them as its defaults; every keyword it
takes overrides one value, and the JSON report records the recipe used, the official one and
each override. ``docs/datasets.md`` lays the recipes out next to the official commands.

* ``pointmaze-{medium,large,giant,teleport}-{navigate,stitch}-v0`` (``generate_locomaze.py``):
  a noisy oracle expert, action = clip(unit direction to the next cell of the BFS shortest path
  to the goal + N(0, noise^2), -1, 1) with noise 0.5 (commands.sh L14-28; the script's own
  default, 0.2, is not what any pointmaze dataset used). ``navigate``: start in a random free
  cell, goal in a random "vertex" cell (a free cell that is not a straight hallway cell), a new
  vertex goal each time the goal is reached (L102-106, L172-175); 1000 episodes x 1001 steps
  (giant: 500 x 2001). ``stitch``: goal a random cell exactly 4 BFS steps from the start, kept
  for the whole episode (L107-136); 5000 episodes x 201 steps.

* ``cube-{single,double,triple,quadruple}-{play,noisy}-v0`` and ``scene-{play,noisy}-v0``
  (``generate_manipspace.py``, env made with ``terminate_at_goal=False,
  mode='data_collection'``): the oracles shipped in ogbench carry out one target after
  another, ``set_new_target(p_stack)`` drawing the next when the oracle is done (L139-143),
  with a per-episode stacking probability p_stack (L100-111: single 0, double U(0, 0.25),
  triple U(0.05, 0.35), quadruple U(0.1, 0.5), scene 0.5). ``play`` uses the plan oracles
  (noise 0.1, noise_smoothing 0.5, L25-26, L55-57, L66-72); ``noisy`` the Markov oracles
  (min_norm 0.4, L27, L50-53, L59-65; scene's cube oracle with max_step=100, L61) plus
  Gaussian action noise of per-episode scale xi ~ U(0, noise), x[1, 1, 1, 3, 10] per action
  dimension (L113-115, L134), and ``p_random_action`` = 0.1 uniformly random actions
  (commands.sh L120-126, L131; play datasets 0, the flag default, L28). Scene episodes in which
  the cube leaves the camera's view (y >= 0.29, or y <= -0.3 outside the drawer's height band)
  are discarded and redrawn (L157-174). All are 1001-step episodes; 1000 episodes, 3000 for
  triple, 5000 for quadruple (commands.sh L112-131).

**Files** have OGBench's layout (``observations``/``actions``/``qpos``/``qvel`` float32,
``terminals`` bool, ``button_states`` int64 for scene; ``qpos``/``qvel`` are the simulator
state *before* each step so single-task rewards can be relabelled), written with
``np.savez_compressed``. The train file goes to ``out_path``, the validation file (a tenth as
many episodes, drawn after the train episodes, as in both scripts) to ``out_path`` with
``.npz`` replaced by ``-val.npz``. Both are written atomically (temp file + ``os.replace``).

**Determinism.** OGBench's envs and oracles draw noise from numpy's *global* RNG (start / goal
jitter, plan keyframes and plan noise). Generation seeds it for its duration and restores the
caller's state afterwards; everything the recipe itself draws (cells, action noise, p_stack,
xi, random actions) comes from a seeded ``numpy.random.Generator`` and the env's own RNG is
seeded on its first reset. The streams differ from OGBench's scripts (which seed nothing:
their ``--seed`` only seeds the SAC experts of the ant/humanoid mazes), the distributions are
the same. Same seed, same arguments, same MuJoCo build -> identical arrays.

**Deliberate differences** (none changes the distribution of the data):

* validation episodes are ``max(1, episodes // 10)``, not ``episodes // 10``: the same at any
  official size; below 10 episodes OGBench's script would write an empty, unloadable file;
* pointmaze: the oracle subgoal is cached per (current cell, goal cell), exactly what
  ``get_oracle_subgoal`` depends on; a new goal is set as
  ``set_goal(goal_xy=add_noise(ij_to_xy(goal_ij)))``, which draws the same noise as
  ``set_goal(goal_ij)`` (L175) but leaves the rendered target marker at the goal instead of at
  NaN (``set_goal(goal_ij)`` writes ``None`` into the marker position);
* manipspace: random actions are drawn uniformly in the action space's bounds from the seeded
  generator, because the env builds a new, unseedable ``action_space`` on every access
  (``env.action_space.sample()``, L127, has the same distribution);
* a scene run that discards 1000 episodes in a row stops with an error instead of looping
  forever (OGBench retries without bound; none of 46 scene episodes generated while checking
  this module was discarded).
"""

from __future__ import annotations

from .episodes import MAX_CONSECUTIVE_DISCARDS, Recorder, record_steps, run_episodes
from .generate import generate_dataset
from .manipspace import scene_cube_in_view
from .pointmaze import STITCH_GOAL_STEPS, evaluate_expert, maze_cells, stitch_goal_cells
from .recipes import (
    NUM_EVAL_TASKS,
    OGBENCH_COMMIT,
    RECIPES,
    SUPPORTED_DATASETS,
    Recipe,
    official_recipe,
    resolve_recipe,
    val_episode_count,
)

__all__ = [
    "MAX_CONSECUTIVE_DISCARDS",
    "NUM_EVAL_TASKS",
    "OGBENCH_COMMIT",
    "RECIPES",
    "STITCH_GOAL_STEPS",
    "SUPPORTED_DATASETS",
    "Recipe",
    "Recorder",
    "evaluate_expert",
    "generate_dataset",
    "maze_cells",
    "official_recipe",
    "record_steps",
    "resolve_recipe",
    "run_episodes",
    "scene_cube_in_view",
    "stitch_goal_cells",
    "val_episode_count",
]
