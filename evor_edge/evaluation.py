"""Closed-loop evaluation in an OGBench singletask environment (OGBench protocol: success rate).

Episodes run vectorised: up to `parallel` environments are stepped together and the policy is asked
for all their actions in one `act_batch` call per tick (one engine call for all of them).

Videos (`evaluate(..., video=VideoSettings(dir))`, `evor-edge eval --video DIR`): the first `episodes`
episodes are rendered offscreen by MuJoCo (the env's ``render_mode="rgb_array"``) and written as
``DIR/<task>_ep<i>_seed<s>_<success|failure>.mp4`` (imageio + imageio-ffmpeg, when they import) or ``.gif``
(Pillow). MuJoCo picks its OpenGL backend when it is first imported, from ``MUJOCO_GL``: ``egl`` (GPU or
Mesa's software EGL: Debian ``libegl1 libgl1-mesa-dri``) or ``osmesa`` (``libosmesa6``) work without a
display. :func:`check_renderer` renders one frame first and turns any failure into one ``ValueError`` line.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm


class BatchPolicy(Protocol):
    def act_batch(self, obs: np.ndarray) -> np.ndarray: ...


VIDEO_FORMATS = ("auto", "mp4", "gif")


@dataclass(frozen=True)
class VideoSettings:
    """Which episodes to film and how: the first `episodes` episodes, every `every`-th step (plus the
    first and last frame), `size` x `size` pixels, played at `fps`."""

    directory: str | os.PathLike[str]
    episodes: int = 2
    size: int = 160
    every: int = 2
    fps: int = 25
    fmt: str = "auto"

    def check(self) -> None:
        if self.episodes < 1 or self.every < 1 or self.fps < 1:
            raise ValueError("video episodes, every and fps must be >= 1")
        if self.size < 16 or self.size % 2:
            raise ValueError(f"--video-size must be an even number >= 16, got {self.size}")
        if self.fmt not in VIDEO_FORMATS:
            raise ValueError(f"video format must be one of {VIDEO_FORMATS}, got {self.fmt!r}")

    def resolved_format(self) -> str:
        """mp4 when imageio + imageio-ffmpeg import (auto), else gif; mp4 asked for without them is an error."""
        have_mp4 = _mp4_available()
        if self.fmt == "mp4" and not have_mp4:
            raise ValueError("--video-format mp4 needs imageio and imageio-ffmpeg (pip install imageio "
                             "imageio-ffmpeg); --video-format gif needs only Pillow")
        if self.fmt == "auto":
            return "mp4" if have_mp4 else "gif"
        return self.fmt


def _mp4_available() -> bool:
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def check_renderer(task: str, size: int = 16) -> str:
    """Render one frame of `task` offscreen; returns the MUJOCO_GL backend used, or raises one ValueError line."""
    import warnings

    from evor_edge.datasets import make_env

    backend = os.environ.get("MUJOCO_GL", "")
    env = make_env(task, render_mode="rgb_array", width=size, height=size)
    try:
        env.reset(seed=0)
        with warnings.catch_warnings():  # GLFW reports a missing display as warnings before it fails
            warnings.simplefilter("ignore")
            frame = env.render()
        if frame is None or getattr(frame, "ndim", 0) != 3:
            raise RuntimeError(f"render() returned {type(frame).__name__}, not an RGB frame")
    except Exception as exc:  # noqa: BLE001 - every GL failure becomes one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(
            f"--video: MuJoCo cannot render offscreen here (MUJOCO_GL={backend or 'unset'}: {type(exc).__name__}"
            f"{': ' + first if first else ''}); install EGL (apt-get install libegl1 libgl1-mesa-dri) or OSMesa "
            "(libosmesa6) and set MUJOCO_GL=egl or osmesa before the process imports mujoco") from None
    finally:
        env.close()
    return backend or "default"


class _EpisodeVideo:
    """Frames of one episode: streamed to an mp4, or kept for a GIF written at the end."""

    def __init__(self, directory: Path, stem: str, settings: VideoSettings, fmt: str) -> None:
        self.directory, self.stem, self.settings, self.fmt = directory, stem, settings, fmt
        self.frames: list[np.ndarray] = []
        self.count = 0
        self.tmp = directory / f".{stem}.partial.{fmt}"
        self.writer = None
        if fmt == "mp4":
            import imageio.v2 as imageio

            self.writer = imageio.get_writer(self.tmp, fps=settings.fps, codec="libx264", quality=7,
                                             macro_block_size=1, pixelformat="yuv420p")

    def add(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        self.count += 1
        if self.writer is not None:
            self.writer.append_data(frame)
        else:
            self.frames.append(frame)

    def finish(self, success: bool) -> str:
        path = self.directory / f"{self.stem}_{'success' if success else 'failure'}.{self.fmt}"
        if self.writer is not None:
            self.writer.close()
            os.replace(self.tmp, path)
        else:
            from PIL import Image

            images = [Image.fromarray(f) for f in self.frames]
            images[0].save(self.tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=max(1, round(1000 / self.settings.fps)), loop=0, optimize=False)
            os.replace(self.tmp, path)
            self.frames.clear()
        return str(path)


def evaluate(
    policy: BatchPolicy, task: str, episodes: int = 50, seed: int = 0, parallel: int = 25,
    progress: bool = True, max_steps: int | None = None, video: VideoSettings | None = None,
) -> dict[str, Any]:
    """Run `episodes` episodes of `task`; episode i is reset with seed `seed + i` (recorded).

    With `video`, the first `video.episodes` episodes are filmed (module docstring); the result lists the
    files under "videos".
    """
    from evor_edge.datasets import make_env

    if episodes < 1:
        raise ValueError("episodes must be >= 1")
    parallel = max(1, min(parallel, episodes))
    video_dir: Path | None = None
    fmt = ""
    if video is not None:
        video.check()
        fmt = video.resolved_format()
        video_dir = Path(video.directory)
        video_dir.mkdir(parents=True, exist_ok=True)
        check_renderer(task)
        envs = [make_env(task, render_mode="rgb_array", width=video.size, height=video.size) for _ in range(parallel)]
    else:
        envs = [make_env(task) for _ in range(parallel)]
    films: dict[int, _EpisodeVideo] = {}
    videos: list[str] = []
    limit = max_steps or envs[0].spec.max_episode_steps or 1000
    successes: list[bool] = [False] * episodes
    lengths: list[int] = [0] * episodes
    started = time.perf_counter()
    bar = tqdm(total=episodes, disable=not progress, desc=f"eval {task}", unit="ep", dynamic_ncols=True)
    next_episode = 0
    ticks = 0
    while next_episode < episodes:
        wave = list(range(next_episode, min(next_episode + parallel, episodes)))
        next_episode += len(wave)
        obs = np.stack([envs[k].reset(seed=seed + ep)[0] for k, ep in enumerate(wave)]).astype(np.float32)
        if video is not None and video_dir is not None:
            for k, ep in enumerate(wave):
                if ep < video.episodes:
                    films[k] = _EpisodeVideo(video_dir, f"{_slug(task)}_ep{ep:03d}_seed{seed + ep}", video, fmt)
                    films[k].add(envs[k].render())
        active = np.ones(len(wave), dtype=bool)
        for step in range(limit):
            idx = np.flatnonzero(active)
            actions = policy.act_batch(obs[idx])
            ticks += 1
            for row, k in enumerate(idx):
                ob, _r, terminated, truncated, info = envs[k].step(actions[row])
                obs[k] = ob
                if info.get("success", False):
                    successes[wave[k]] = True
                if terminated or truncated:
                    active[k] = False
                    lengths[wave[k]] = step + 1
                    bar.update(1)
                if k in films and (terminated or truncated or (step + 1) % video.every == 0):  # type: ignore[union-attr]
                    films[k].add(envs[k].render())
            if not active.any():
                break
        for k in np.flatnonzero(active):
            lengths[wave[k]] = limit
            bar.update(1)
        for k, film in sorted(films.items()):
            videos.append(film.finish(successes[wave[k]]))
        films.clear()
    bar.close()
    for env in envs:
        env.close()
    return {
        "task": task,
        "episodes": episodes,
        "success_rate": float(np.mean(successes)),
        "successes": [int(s) for s in successes],
        "seeds": [seed + i for i in range(episodes)],
        "mean_episode_length": float(np.mean(lengths)),
        "policy_calls": ticks,
        "seconds": round(time.perf_counter() - started, 1),
        **({"videos": videos, "video_format": fmt} if video is not None else {}),
    }


def _slug(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task)
