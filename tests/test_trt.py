"""TensorRT: every engine variant we write parses and builds in TensorRT-RTX with its own profile; the
profile (one source of truth for build_trt.sh and trt-check) respects a pruned engine's TopK; build_trt.sh
picks TensorRT 10 / 11 flags; polygraphy replays the parity files; trt-check's refusals are one line.

The TensorRT-RTX tests skip where `tensorrt_rtx_bindings` does not import, except under CI (CI=true),
where the `trt` extra is installed and a missing module is a failure: CI must not pass unchecked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from agent_fixtures import random_agent
from click.testing import CliRunner
from engine_fixtures import write_engine

from evor_edge.calibration import calibrate_engine
from evor_edge.checkpoint import save_checkpoint
from evor_edge.export import ExportError, export_engine
from evor_edge.export.polygraphy_files import INPUTS_FILE, OUTPUTS_FILE, POLYGRAPHY_DIR, decode_array, encode_array
from evor_edge.export.trt import build_script
from evor_edge.export.trt_check import ENV_VAR, TrtCheckError, check_engine, check_engine_dir, find_tool
from evor_edge.normalization import ReturnScaler
from evor_edge.runtime.manifest import (
    MANIFEST_FILE,
    EngineError,
    ShapeProfile,
    check_profile,
    default_profile,
    load_manifest,
    load_plan_record,
    manifest_profile,
    sha256_file,
)
from evor_edge.trt_command import trt_check_command

OBS_DIM, ACT_DIM = 3, 2
N_PI, N = 6, 5
FAST = {"samples": 16, "parity_samples": 8, "latency_runs": 1, "latency_threads": (1,), "progress": False}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rtx_or_skip() -> None:
    tool, why = find_tool("tensorrt-rtx")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must check engines with TensorRT-RTX (pip install -e '.[trt]'): {why}")
        pytest.skip(f"TensorRT-RTX not usable here: {why}")


def _agent(kind: str, seed: int = 0):
    return random_agent(kind, OBS_DIM, ACT_DIM, hidden_dims=(32, 32), euler_steps=3, obs_mean=(0.5, -1.0, 2.0),
                        obs_std=(1.0, 2.0, 0.5), returns=ReturnScaler(center=-5.0, half_width=3.0), seed=seed,
                        num_candidates=N_PI, num_rtg_eval=N)


def _dataset(path: Path) -> Path:
    rng = np.random.default_rng(0)
    obs = np.asarray((0.5, -1.0, 2.0)) + rng.standard_normal((12 * 20, OBS_DIM))
    terminals = np.zeros(12 * 20, dtype=bool)
    terminals[19::20] = True
    np.savez(path, observations=obs.astype(np.float32), terminals=terminals)
    return path


# Every kind of engine the toolkit writes: export variants, QC, and the calibrated FP16 / INT8 (QDQ) ones.
EXPORTS = {
    "fp32": ("evor", {}),
    "critic_steps": ("evor", {"critic_steps": 2}),
    "heun": ("evor", {"critic_steps": 2, "critic_solver": "heun"}),
    "midpoint": ("evor", {"critic_steps": 2, "critic_solver": "midpoint"}),
    "prune": ("evor", {"prune": "2:3"}),
    "qc": ("qc", {}),
}
# heun / midpoint engines are not calibrated (calibrate refuses them: their critic state feeds two updates)
CALIBRATED = {f"{src}_{precision}": (src, precision) for src in ("fp32", "critic_steps", "prune", "qc")
              for precision in ("fp16", "int8")}


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Export / calibrate every variant; each export and calibration runs the TensorRT check itself."""
    _rtx_or_skip()
    root = tmp_path_factory.mktemp("trt")
    ckpts = {kind: save_checkpoint(root / f"run_{kind}", _agent(kind, seed), 1)
             for seed, kind in enumerate(("evor", "qc"))}
    out: dict[str, Path] = {}
    for name, (kind, kwargs) in EXPORTS.items():
        export_engine(ckpts[kind], root / name, progress=False, **kwargs)
        out[name] = root / name
    data = _dataset(root / "data.npz")
    for name, (src, precision) in CALIBRATED.items():
        calibrate_engine(out[src], data, precision, root / name, **FAST)
        out[name] = root / name
    return out


# ------------------------------------------------------------------------------------- profile (no TRT)
def test_profile_starts_where_a_pruned_engine_can(tmp_path: Path) -> None:
    d, _ = write_engine(tmp_path / "e", extra={"prune": {"survivors": 3, "screen_rtg": 2}})
    manifest = load_manifest(d)
    profile = default_profile(manifest)
    assert profile.min == (1, 3, 2) and profile.opt == (1, 8, 4) and profile.max == (16, 64, 64)
    with pytest.raises(EngineError, match="min N_pi=1 is below 3"):
        check_profile(manifest, ShapeProfile((1, 1, 2), (1, 8, 4), (16, 64, 64)))
    with pytest.raises(EngineError, match="min N=1 is below 2"):
        check_profile(manifest, ShapeProfile((1, 3, 1), (1, 8, 4), (16, 64, 64)))
    with pytest.raises(EngineError, match="min <= opt <= max"):
        check_profile(manifest, ShapeProfile((1, 3, 2), (1, 80, 4), (16, 64, 64)))
    assert profile.outside((1, 2, 4)) == "N_pi=2 is outside the TensorRT profile's [3, 64]"
    assert profile.outside((1, 3, 2)) is None
    script = build_script(manifest)
    assert "--minShapes=obs:1x4,action_noise:1x3x2,rtg_noise:1x3x2" in script
    qc = load_manifest(write_engine(tmp_path / "q", kind="qc")[0])
    assert default_profile(qc) == ShapeProfile((1, 1, 1), (1, 8, 1), (16, 64, 1))
    # the manifest's recorded profile is what build_trt.sh and trt-check use; a bad one is refused
    manifest.extra["tensorrt"] = {"profile": {"min": [1, 1, 1], "opt": [1, 8, 4], "max": [16, 64, 64]}}
    with pytest.raises(EngineError, match="below 3"):
        manifest_profile(manifest)


FAKE_TRTEXEC = """#!/usr/bin/env bash
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v${FAKE_CODE}] [b9] # trtexec $*"
[ "$1" = "--help" ] && exit 0
echo "$*" >> "$FAKE_LOG"
for a in "$@"; do case "$a" in --saveEngine=*) printf 'plan' > "${a#--saveEngine=}";; esac; done
"""


def _run_script(engine_dir: Path, tmp_path: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    env = {**os.environ, "TRTEXEC": str(fake), "FAKE_CODE": code, "FAKE_LOG": str(tmp_path / "log")}
    (tmp_path / "log").unlink(missing_ok=True)
    return subprocess.run(["bash", str(engine_dir / "build_trt.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_script_flags_for_tensorrt_10_and_11(tmp_path: Path, precision: str) -> None:
    d, _ = write_engine(tmp_path / "e", precision=precision)
    manifest = load_manifest(d)
    (d / "build_trt.sh").write_text(build_script(manifest))
    for code, version, want, banned in [
        ("100300", "10.3.0", {"--noTF32"} if precision == "fp32" else {"--stronglyTyped"}, {"--fp16", "--int8"}),
        ("110100", "11.1.0", {"--noTF32"} if precision == "fp32" else set(), {"--stronglyTyped", "--fp16"}),
    ]:
        done = _run_script(d, tmp_path, code, "--memPoolSize=workspace:64")
        assert done.returncode == 0, done.stderr
        argv = (tmp_path / "log").read_text().split()
        assert want <= set(argv) and not banned & set(argv), argv
        assert {"--timingCacheFile=timing.cache", "--skipInference", "--memPoolSize=workspace:64"} <= set(argv)
        record = load_plan_record(d, manifest)  # the runtime's reader accepts what the script wrote
        assert record["tensorrt_version"] == version and record["precision"] == precision
        assert record["plan_sha256"] == sha256_file(d / "engine.plan")
        assert record["profile"] == default_profile(manifest).as_dict()
    bench = _run_script(d, tmp_path, "100300", "--bench")
    assert bench.returncode == 0, bench.stderr
    assert {"--loadEngine=engine.plan", "--useCudaGraph", "--noDataTransfers", "--separateProfileRun"} <= set(
        (tmp_path / "log").read_text().split())
    old = _run_script(d, tmp_path, "90000")
    assert old.returncode == 1 and "knows TensorRT 10 and 11" in old.stderr
    (d / "engine.onnx").write_bytes((d / "engine.onnx").read_bytes() + b" ")
    tampered = _run_script(d, tmp_path, "100300")
    assert tampered.returncode == 1 and "does not match manifest.json" in tampered.stderr


# ----------------------------------------------------------------------------- TensorRT-RTX builds
@pytest.mark.parametrize("name", [*EXPORTS, *CALIBRATED])
def test_every_engine_variant_builds_in_tensorrt_rtx(engines: dict[str, Path], name: str) -> None:
    manifest = load_manifest(engines[name])
    check = manifest.extra["tensorrt"]["check"]
    assert check["passed"] is True and check["tool"] == "tensorrt-rtx", check
    assert check["plan_bytes"] > 0 and check["build_seconds"] > 0
    assert check["profile"] == manifest.extra["tensorrt"]["profile"] == default_profile(manifest).as_dict()
    assert check["engine_sha256"] == manifest.engine_sha256
    assert not [w for w in check["warnings"] if "profile" in w.lower()]
    assert sorted(check["network"]["inputs"]) == sorted(manifest.input_names)
    if manifest.extra.get("prune"):
        assert check["profile"]["min"] == [1, 2, 3]  # N_pi >= K1 = 2, N >= N1 = 3
    if manifest.precision != "fp32":
        parity = json.loads((engines[name] / "parity.json").read_text())
        assert parity["tensorrt"]["verified"] is True


@pytest.mark.parametrize("name", ["fp32_fp16", "prune_fp16", "qc_fp16"])
def test_fp16_graphs_keep_state_logsumexp_and_unscaling_float32(engines: dict[str, Path], name: str) -> None:
    """The strongly typed FP16 graph TensorRT builds as-is (TensorRT 11: no flag can widen it again):
    MLP bodies in FP16, but the Euler state, the prune screen's LogSumExp input and the return un-scaling
    in FP32 (what keeps flow policies accurate in FP16)."""
    from onnx import TensorProto

    from evor_edge.calibration.graph import state_precision_violations

    manifest = load_manifest(engines[name])
    model = onnx.load(str(engines[name] / "engine.onnx"))
    assert state_precision_violations(model, manifest.kind) == []
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input,
                                                             *inferred.graph.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    assert TensorProto.FLOAT16 in types.values()  # it is a mixed-precision graph
    lse = [n for n in model.graph.node if n.op_type == "ReduceLogSumExp"]
    assert bool(lse) == bool(manifest.extra.get("prune"))
    for node in lse:
        assert types[node.input[0]] == TensorProto.FLOAT, node.name
    made = {out: node for node in model.graph.node for out in node.output}
    for output in manifest.output_names:  # un-scaling: the last three ops before every output read FP32
        frontier = [output]
        for _ in range(3):
            nodes = [made[t] for t in frontier if t in made]
            frontier = [i for node in nodes for i in node.input if i]
            assert not [t for t in frontier if types.get(t) == TensorProto.FLOAT16], (output, frontier)


def test_pruned_profile_from_one_is_refused_by_the_builder(engines: dict[str, Path]) -> None:
    d = engines["prune"]
    manifest = load_manifest(d)
    with pytest.raises(TrtCheckError, match="not valid for this engine.*(self-consistent|TopK)"):
        check_engine(d / "engine.onnx", manifest, ShapeProfile((1, 1, 1), (1, N_PI, N), (16, 64, 64)))


def _cli(*args: str):
    return CliRunner().invoke(trt_check_command, list(args))


def test_trt_check_command(engines: dict[str, Path], tmp_path: Path) -> None:
    d = tmp_path / "e"
    shutil.copytree(engines["prune_int8"], d)
    result = _cli(str(d), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"] and report["tool"] == "tensorrt-rtx"
    assert load_manifest(d).extra["tensorrt"]["check"]["checked_at"] == report["checked_at"]
    human = _cli(str(d))
    assert human.exit_code == 0 and "passed tensorrt-rtx" in human.output and "min (1, 2, 3)" in human.output


def _assert_one_line(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert pattern in lines[0], lines[0]


def test_trt_check_refusals_are_one_line(engines: dict[str, Path], tmp_path: Path) -> None:
    _assert_one_line(_cli(str(tmp_path)), "manifest.json is missing")
    bad_hash = tmp_path / "hash"
    shutil.copytree(engines["fp32"], bad_hash)
    (bad_hash / "engine.onnx").write_bytes((bad_hash / "engine.onnx").read_bytes()[:-10])
    _assert_one_line(_cli(str(bad_hash)), "does not match the manifest")
    # a pruned engine whose recorded profile (what its build_trt.sh uses) starts at N_pi = 1
    stale = tmp_path / "stale_profile"
    shutil.copytree(engines["prune"], stale)
    data = json.loads((stale / MANIFEST_FILE).read_text())
    data["extra"]["tensorrt"]["profile"]["min"] = [1, 1, 1]
    (stale / MANIFEST_FILE).write_text(json.dumps(data))
    _assert_one_line(_cli(str(stale)), "min N_pi=1 is below 2")
    if find_tool("tensorrt")[0] is None:  # TensorRT proper asked for where it does not import (or has no GPU)
        _assert_one_line(_cli(str(engines["fp32"]), "--tool", "tensorrt"), "no TensorRT to check with: ")


def test_parser_error_is_reported_and_recorded(tmp_path: Path) -> None:
    _rtx_or_skip()
    d, _ = write_engine(tmp_path / "e")
    model = onnx.load(str(d / "engine.onnx"))
    model.graph.node[0].op_type = "NoSuchOp"  # an op TensorRT's parser does not know (and no plugin has)
    (d / "engine.onnx").write_bytes(model.SerializeToString())
    data = json.loads((d / MANIFEST_FILE).read_text())
    data["engine_sha256"] = sha256_file(d / "engine.onnx")
    (d / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(TrtCheckError, match="ONNX parser rejected engine.onnx"):
        check_engine_dir(d)
    recorded = load_manifest(d).extra["tensorrt"]["check"]
    assert recorded["passed"] is False and "parser rejected" in recorded["error"]


def test_a_failed_check_leaves_no_engine_dir(engines: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import evor_edge.export.trt_check as trt_check

    def refuse(*args: object, **kwargs: object) -> dict:
        raise TrtCheckError("tensorrt-rtx 1.7: simulated builder refusal")

    monkeypatch.setattr(trt_check, "check_engine", refuse)
    source = load_manifest(engines["fp32"]).source_checkpoint["path"]
    with pytest.raises(ExportError, match="simulated builder refusal"):
        export_engine(source, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_check_can_be_switched_off(engines: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "off")
    source = load_manifest(engines["qc"]).source_checkpoint["path"]
    export_engine(source, tmp_path / "out", progress=False)
    check = load_manifest(tmp_path / "out").extra["tensorrt"]["check"]
    assert check == {"skipped": f"{ENV_VAR}=off", "verified": False}
    monkeypatch.setenv(ENV_VAR, "bogus")
    _assert_one_line(_cli(str(tmp_path / "out")), f"{ENV_VAR}='bogus'")


# ------------------------------------------------------------------------------------------ polygraphy
def _polygraphy_or_skip() -> str:
    exe = shutil.which("polygraphy", path=str(Path(sys.executable).parent)) or shutil.which("polygraphy")
    if exe is None:
        pytest.skip("polygraphy is not installed (dev extra)")
    return exe


@pytest.mark.parametrize("name", ["prune", "fp32_int8"])
def test_polygraphy_replays_the_parity_files(engines: dict[str, Path], name: str, tmp_path: Path) -> None:
    exe = _polygraphy_or_skip()
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    d = tmp_path / name
    shutil.copytree(engines[name], d)
    record = load_manifest(d).extra["polygraphy"]
    feeds = load_json(str(d / POLYGRAPHY_DIR / INPUTS_FILE))  # Polygraphy's own loader
    results = RunResults.load(str(d / POLYGRAPHY_DIR / OUTPUTS_FILE))
    assert [list(f["action_noise"].shape[:2]) for f in feeds] == [s[:2] for s in record["shapes"]]
    assert len(results[0][1]) == len(feeds) and list(results[0][1][0].keys()) == load_manifest(d).output_names
    assert record["shapes"] == [list(manifest_profile(load_manifest(d)).opt),
                                [2, *manifest_profile(load_manifest(d)).min[1:]]]  # opt, and the profile's min

    command = record["command_onnxruntime"].split()
    done = subprocess.run([exe, *command[1:]], cwd=d, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "PASSED" in done.stdout + done.stderr, done.stdout[-2000:] + done.stderr[-2000:]

    # the replay is a real check: a reference that moved beyond the tolerance fails it
    raw = json.loads((d / POLYGRAPHY_DIR / OUTPUTS_FILE).read_text())
    it = raw["lst"][0][1][0]["outputs"]
    it["returns"] = encode_array(decode_array(it["returns"]) + np.float32(10.0))
    (d / POLYGRAPHY_DIR / OUTPUTS_FILE).write_text(json.dumps(raw))
    failed = subprocess.run([exe, *command[1:]], cwd=d, capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "FAILED" in failed.stdout + failed.stderr


def test_tensorrt_without_gpu_is_one_line_or_falls_back_to_rtx(engines: dict[str, Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A `tensorrt` that imports but cannot create a builder (no GPU): auto uses TensorRT-RTX, and asking for
    `tensorrt` explicitly is one clear line."""
    import types

    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.3.0"

    class ILogger:
        Severity = types.SimpleNamespace(WARNING=2)

        def __init__(self) -> None:
            pass

    def builder(logger: object) -> None:
        raise RuntimeError("CUDA initialization failure with error: 35")

    fake.ILogger, fake.Builder = ILogger, builder
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    assert find_tool()[0].name == "tensorrt-rtx"
    _assert_one_line(_cli(str(engines["qc"]), "--tool", "tensorrt"),
                     "tensorrt 10.3.0 cannot create a builder here (CUDA initialization failure")
