"""`evor-edge train`: resolve the dataset, build the TrainConfig (preset, flags, typed `--set FIELD=VALUE`)
and launch training on one or `--nproc` local ranks (evor_edge.distributed).

The command's options live in `evor_edge.cli`; this module does its work and words the summary for people.
Errors follow the CLI's convention (`evor_edge.cli_errors.friendly_errors` on the command). Torch is imported
only when training starts, not when this module is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any


def parse_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    """FIELD=VALUE pairs for TrainConfig, typed by the dataclass field's annotation (tuples as comma lists,
    booleans as true/false/1/0/yes/no: `bool("False")` would be true)."""
    import dataclasses
    import typing

    from evor_edge.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    settable = {f.name for f in dataclasses.fields(TrainConfig)} - {"agent", "preset", "extra"}
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or name not in settable:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(settable))}")
        try:
            out[name] = _typed_value(hints[name], raw.strip())
        except ValueError:
            kind = getattr(hints[name], "__name__", None) if typing.get_origin(hints[name]) is None else None
            raise ValueError(f"--set {item!r}: {raw!r} is not a valid {kind or hints[name]}") from None
    return out


def _typed_value(hint: Any, raw: str) -> Any:
    import typing

    origin = typing.get_origin(hint)
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        return tuple(_typed_value(item_type, part.strip()) for part in raw.split(",") if part.strip())
    if hint is bool:
        lowered = raw.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(raw)
    if hint in (int, float, str):
        return hint(raw)
    raise ValueError(raw)


def run_train(*, task: str | None, dataset_path: str | None, agent: str, preset: str, steps: int | None,
              batch_size: int | None, reward_model: str | None, checkpoint_every: int | None, seed: int, out: str,
              resume: bool, device: str, step_mode: str, action_low: str | None, action_high: str | None,
              weights_only: bool, time_limit: float | None, threads: int | None, nproc: int,
              overrides: tuple[str, ...], given: Collection[str], max_restarts: int = 0,
              ) -> tuple[dict[str, Any], Callable[[dict[str, Any]], str]] | None:
    """Train and return the summary and its human wording; None on a torchrun rank other than 0 (only rank 0
    prints). `given`: the parameter names the user typed on the command line; those that are config fields are
    recorded as explicit, with `--set`'s fields."""
    from evor_edge.config import preset_config
    from evor_edge.distributed import launch_train

    if dataset_path is None:
        if task is None:
            raise ValueError("give --dataset FILE (and --env TASK for an OGBench raw file)")
        from evor_edge.datasets import split_task_name

        _env_name, dataset_name = split_task_name(task)
        dataset_path = str(Path("~/.ogbench/data").expanduser() / f"{dataset_name}.npz")
    elif task is not None:
        from evor_edge.datasets import split_task_name

        split_task_name(task)
    flags = dict(steps=steps, batch_size=batch_size, reward_model=reward_model, checkpoint_every=checkpoint_every,
                 seed=seed)
    set_fields = parse_overrides(overrides)
    config = preset_config(preset, agent=agent, **{**flags, **set_fields})
    typed = [name for name in ("agent", "preset", *flags) if name in given]
    if max_restarts and nproc <= 1:
        raise ValueError("--max-restarts restarts the ranks that --nproc starts: use it with --nproc K > 1 (under "
                         "torchrun, pass --max-restarts to torchrun)")
    result = launch_train(nproc, task, dataset_path, config, out, max_restarts=max_restarts, resume=resume,
                          threads=threads, device=device,
                          step_mode=step_mode, action_low=action_low, action_high=action_high,
                          save_optimizer=not weights_only, time_limit_s=time_limit,
                          explicit_fields=[*typed, *set_fields])
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 prints the summary
        return None
    return result, summary


def summary(r: dict[str, Any]) -> str:
    return (f"trained {r['agent']} to step {r['steps']} in {r['seconds']} s "
            f"({r['ms_per_step']} ms/step on {r['device']}, {r['step_mode']}); checkpoint {r['checkpoint']}")
