"""OpenVINO engine: same probabilities as PyTorch, verified IR files, validated reduced precision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from app.config import ConfigurationError, app_config_from_dict, runner_options
from operators.errors import ModelConfigurationError
from operators.inference import EnsembleRunner, MemberInputs, RunnerOptions
from operators.model_manifest import load_model_set, sha256_file
from tests.unit._model_sets import make_model_set

pytest.importorskip("openvino")
# Converting the small set's five fold networks (TorchScript tracing) takes ~30 s of CPU.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Random last layers (None): the probabilities depend on the input, so equality means something.
RANDOM = {"t2_wae": [None, None], "clinical": [None, None], "t2_etsc": [None]}
ENSEMBLES = {"WAE-Net": {"t2_wae": 0.5, "clinical": 0.5}, "eTSC-Net": {"t2_etsc": 1.0}}


def _inputs(seed: int) -> MemberInputs:
    rng = np.random.default_rng(seed)
    return MemberInputs(images={"t2@wae": rng.random((16,) * 3, dtype=np.float32),
                                "t2@etsc": rng.random((32,) * 3, dtype=np.float32)},
                        clinical=[float(rng.integers(1, 60)), float(rng.integers(60, 120)), 1.0, 0.0])


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return make_model_set(tmp_path_factory.mktemp("ov"), RANDOM, ensembles=ENSEMBLES)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ov-cache")


@pytest.fixture(scope="module")
def openvino_runner(small_set, cache) -> EnsembleRunner:
    return EnsembleRunner(small_set, RunnerOptions(device="cpu", openvino_cache=cache))


def test_openvino_and_pytorch_give_the_same_probabilities(small_set, cache, openvino_runner):
    pytorch = EnsembleRunner(small_set, RunnerOptions(device="cpu", engine="pytorch"))
    stream = EnsembleRunner(small_set, RunnerOptions(device="cpu", openvino_cache=cache, weights_residency="stream"))
    assert openvino_runner.engine == "openvino" and pytorch.engine == "pytorch"
    for seed in (1, 2):
        expected, _ = pytorch.member_fold_scores(_inputs(seed))
        for runner in (openvino_runner, stream):
            got, _ = runner.member_fold_scores(_inputs(seed))
            assert set(got) == set(expected)
            for member, probabilities in expected.items():
                assert got[member] == pytest.approx(probabilities, abs=1e-5)
    spread = {round(p, 4) for seed in (1, 2) for p in openvino_runner.member_fold_scores(_inputs(seed))[0]["t2_wae"]}
    assert len(spread) > 1  # the comparison is between input-dependent outputs
    prediction = openvino_runner.predict(_inputs(3))
    assert prediction.inference_engine.startswith("openvino ") and prediction.inference_engine.endswith("CPU fp32")
    assert pytorch.predict(_inputs(3)).inference_engine.startswith("pytorch ")


def test_second_start_reuses_the_cache(small_set, cache, openvino_runner):
    again = EnsembleRunner(small_set, RunnerOptions(device="cpu", openvino_cache=cache))
    assert again.conversion_s == 0.0
    assert len(list(cache.glob("*/entry.json"))) == 5  # one entry per fold network


def test_corrupted_cached_ir_is_a_startup_error_naming_the_file(small_set, cache, openvino_runner, tmp_path):
    broken = tmp_path / "cache"
    import shutil

    shutil.copytree(cache, broken)
    victim = sorted(broken.glob("*/model.bin"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ModelConfigurationError, match="checksum mismatch for OpenVINO IR file") as err:
        EnsembleRunner(small_set, RunnerOptions(device="cpu", openvino_cache=broken))
    assert str(victim) in err.value.reason


def _with_int8_block(model_set, cache: Path, folder: Path, diff: float = 2e-4) -> Path:
    """Copy the set and list real IR files (taken from the f32 cache) as its int8 mode."""
    import shutil

    dst = folder / "set"
    shutil.copytree(model_set.root, dst)
    (dst / "openvino").mkdir()
    entries = {}
    by_weights = {json.loads(p.read_text())["weights_sha256"]: p.parent for p in cache.glob("*/entry.json")}
    for name in ("t2_wae", "t2_etsc"):
        entries[name] = []
        for k, fold in enumerate(model_set.members[name].folds):
            src = by_weights[fold.sha256]
            for ext in ("xml", "bin"):
                shutil.copy(src / f"model.{ext}", dst / "openvino" / f"{name}.{k}.{ext}")
            entries[name].append({ext: f"openvino/{name}.{k}.{ext}" for ext in ("xml", "bin")} |
                                 {f"{ext}_sha256": sha256_file(dst / "openvino" / f"{name}.{k}.{ext}")
                                  for ext in ("xml", "bin")})
    manifest = yaml.safe_load((dst / "manifest.yaml").read_text())
    manifest["openvino_reduced_precision"] = {"int8": {
        "tolerance": 1e-3, "validation": {"cases": 2, "max_abs_probability_diff": diff}, "members": entries}}
    (dst / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return dst


def test_manifest_ir_checksum_mismatch_names_the_file(small_set, cache, openvino_runner, tmp_path):
    folder = _with_int8_block(small_set, cache, tmp_path)
    ms = load_model_set(folder)
    runner = EnsembleRunner(ms, RunnerOptions(device="cpu", openvino_cache=cache, precision="reduced"))
    assert runner.precision == "int8"
    prediction = runner.predict(_inputs(1))
    assert "int8 (validated on 2 cases" in prediction.inference_engine
    victim = folder / "openvino" / "t2_etsc.0.xml"
    victim.write_text(victim.read_text()[:-40])  # truncated
    with pytest.raises(ModelConfigurationError, match="openvino_reduced_precision.int8.members.t2_etsc") as err:
        load_model_set(folder)
    assert str(victim.resolve()) in err.value.reason and "checksum mismatch" in err.value.reason


def test_reduced_precision_only_where_validated(small_set, cache, openvino_runner, tmp_path):
    with pytest.raises(ModelConfigurationError, match="int8 is not validated"):
        EnsembleRunner(small_set, RunnerOptions(device="cpu", openvino_cache=cache, precision="int8"))
    fallback = EnsembleRunner(small_set, RunnerOptions(device="cpu", openvino_cache=cache, precision="reduced"))
    assert fallback.precision == "fp32"
    folder = _with_int8_block(small_set, cache, tmp_path, diff=5e-3)
    with pytest.raises(ModelConfigurationError, match="not validated: max_abs_probability_diff 0.005"):
        load_model_set(folder)


def test_without_openvino_the_app_runs_on_pytorch_and_says_so(small_set):
    code = ("import sys, logging; sys.modules['openvino'] = None; logging.basicConfig(level=logging.WARNING)\n"
            "from operators.inference import EnsembleRunner, RunnerOptions\n"
            f"r = EnsembleRunner({str(small_set.root)!r}, RunnerOptions(device='cpu'))\n"
            "print('ENGINE', r.engine_description)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ENGINE pytorch" in proc.stdout
    assert "OpenVINO is not installed: the networks run on PyTorch" in proc.stderr


def test_engine_and_precision_configuration():
    config = app_config_from_dict({"inference_engine": "pytorch", "inference_precision": "reduced",
                                   "openvino_cache": "/tmp/x"})
    options = runner_options(config)
    assert (options.engine, options.precision, options.openvino_cache) == ("pytorch", "reduced", Path("/tmp/x"))
    with pytest.raises(ConfigurationError, match="inference_engine must be one of"):
        app_config_from_dict({"inference_engine": "onnx"})
    with pytest.raises(ModelConfigurationError, match="inference precision must be one of"):
        RunnerOptions(precision="fp16")


def test_conversion_sends_no_telemetry(small_set, tmp_path):
    """OpenVINO's converter reports usage to Google Analytics by default; the app switches it off."""
    home = tmp_path / "home"
    home.mkdir()
    code = ("import json, sys\n"
            "attempts = []\n"
            "def refuse(event, args):\n"
            "    if event in ('socket.connect', 'socket.getaddrinfo', 'socket.gethostbyname'):\n"
            "        attempts.append(event)\n"
            "        raise ConnectionRefusedError('network access refused in this test')\n"
            "sys.addaudithook(refuse)\n"
            "from operators.inference import EnsembleRunner, RunnerOptions\n"
            f"r = EnsembleRunner({str(small_set.root)!r}, RunnerOptions(device='cpu', "
            f"openvino_cache={str(tmp_path / 'cache')!r}))\n"
            "print(json.dumps({'engine': r.engine_description, 'attempts': attempts, "
            "'telemetry': sys.modules.get('openvino_telemetry', 'absent') is None}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "XDG_CACHE_HOME", "TSC_OPENVINO_CACHE")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(env, HOME=str(home), PYTHONPATH=str(REPO)), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["engine"].startswith("openvino") and report["attempts"] == []
    assert report["telemetry"] is True, "openvino_telemetry was importable"
    assert not (home / "intel").exists(), "OpenVINO telemetry wrote its client ID under HOME"
    assert list((tmp_path / "cache").glob("*/model.xml")), "nothing was converted"
