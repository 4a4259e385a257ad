"""THE torch-free test: evor_edge.runtime must import and act with numpy + onnxruntime only."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from engine_fixtures import write_engine

RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime"
FORBIDDEN = ("torch", "ogbench", "onnx", "mujoco", "gymnasium")

CHILD = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys

    BLOCKED = ("torch", "ogbench")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test (the robot has no {name})")
            return None

    sys.meta_path.insert(0, Block())
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the import hook did not block torch")

    import numpy as np
    from evor_edge.runtime import EvorPolicy
    from evor_edge.runtime.bench import observations_from_manifest, run_bench

    policy = EvorPolicy.load(sys.argv[1], num_candidates=4, num_rtg=3)
    action = policy.act(np.zeros(policy.obs_dim, dtype=np.float32))
    batch = policy.act_batch(np.zeros((2, policy.obs_dim)))
    bench = run_bench(policy, 500, 5, observations_from_manifest(policy.manifest, 3), warmup=1)
    print(json.dumps({
        "action": action.tolist(),
        "batch_shape": list(batch.shape),
        "bench_ticks": bench["ticks"],
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ogbench", "onnx")),
    }))
    """
)


def test_runtime_runs_without_torch_or_ogbench(tmp_path: Path) -> None:
    engine_dir, _ = write_engine(tmp_path / "engine")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(engine_dir)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["action"]) == 2
    assert result["batch_shape"] == [2, 2]
    assert result["bench_ticks"] == 5
    assert result["loaded"] == []  # no torch, ogbench or onnx module was even partially imported


def test_runtime_sources_import_nothing_heavy() -> None:
    """Static check: no module under runtime/ imports torch, onnx, ogbench, mujoco or gymnasium."""
    offenders = []
    for path in sorted(RUNTIME_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
