"""The MAP command as mercure and MONAI Deploy run it: their folders, environment and user.

Each test lays out the input exactly as the platform does and runs ``python -m
app`` (the MAP manifest's command, no ``-i/-o``) as a foreign non-root user
(``setpriv --reuid 12345``) with a read-only input folder, ``HOME`` not
writable and the working directory ``/``:

* mercure (``app/process/runtime_base.py`` of mercure): input ``/tmp/data`` with
  ``task.json`` beside the images and every file name prefixed with its series UID
  (``<SeriesInstanceUID>#<name>.dcm``); output ``/tmp/output``; the environment
  sets ``MERCURE_IN_DIR``/``MERCURE_OUT_DIR``, ``MONAI_INPUTPATH``/``MONAI_OUTPUTPATH``
  and ``HOLOSCAN_INPUT_PATH``/``HOLOSCAN_OUTPUT_PATH`` to them. A non-zero exit is a
  failed module whose outputs are not dispatched, so the module runs with
  ``TSC_EXIT_CODE_POLICY=sr-written``.
* MONAI Deploy Workflow Manager (docker task plugin): the Informatics Gateway's
  ``<StudyUID>/<SeriesUID>/<SOPUID>.dcm`` tree under ``HOLOSCAN_INPUT_PATH``; every
  exited container counts as succeeded, so the mandatory SR output is the signal.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from pydicom import dcmread

from operators.sr_reader import read_result_sr
from synthetic import StudyOptions, generate_study
from tests.node_helpers import REPO
from tests.unit._model_sets import make_model_set

pytestmark = [pytest.mark.slow, pytest.mark.integration]

FOREIGN_UID = 12345
SMALL = dict(decoys=False, t2_matrix=(128, 128), flair_matrix=(112, 112), slices=12)
SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def _can_switch_user() -> bool:
    # the foreign user must be able to reach the checkout (mktemp -d folders are 0700)
    reachable = all(p.stat().st_mode & stat.S_IXOTH for p in Path(__file__).resolve().parents)
    return shutil.which("setpriv") is not None and os.geteuid() == 0 and reachable


needs_root = pytest.mark.skipif(not _can_switch_user(),
                                reason="runs the app as a foreign UID: needs root, setpriv and a checkout others can reach")


@pytest.fixture()
def tmp_path() -> Iterator[Path]:
    """A folder the foreign user can reach (pytest keeps its own base folder private, 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="tsc-platform-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def models() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="tsc-platform-models-"))
    make_model_set(root, {m: [0.7, 0.7] for m in ("t2_wae", "flair_wae", "flair3_wae", "clinical",
                                                  "t2_etsc", "flair_etsc")})
    _world_readable(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def app_config() -> Iterator[Path]:
    """The weight-free brain extraction: these small phantoms test the platform contracts, not HD-BET."""
    folder = Path(tempfile.mkdtemp(prefix="tsc-platform-config-"))
    (folder / "app.yaml").write_text("brain_extraction: fallback\n")
    _world_readable(folder)
    yield folder / "app.yaml"
    shutil.rmtree(folder, ignore_errors=True)


def _world_readable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0))


def _read_only(root: Path) -> None:
    for p in [*root.rglob("*"), root]:
        p.chmod(0o555 if p.is_dir() else 0o444)


def _study(tmp: Path, seed: int, *, flair: bool = True) -> tuple[str, list[Path]]:
    study = generate_study(tmp / f"gen{seed}", seed, StudyOptions(include_flair=flair, **SMALL))
    files = [f for f in sorted(study.input_dir.rglob("*")) if f.is_file() and f.suffix != ".json"]
    return study.study_instance_uid, files


def mercure_layout(tmp: Path, files: list[Path], module_settings: dict) -> tuple[Path, Path]:
    """``in/`` with ``<SeriesInstanceUID>#<name>.dcm`` files and task.json; empty ``out/``."""
    folder_in, folder_out = tmp / "processing" / "in", tmp / "processing" / "out"
    folder_in.mkdir(parents=True)
    folder_out.mkdir(parents=True)
    for f in files:
        series = dcmread(f, stop_before_pixels=True).SeriesInstanceUID
        shutil.copy(f, folder_in / f"{series}#{f.stem}.dcm")
    task = {"id": "5f0c1a3e-task", "info": {"action": "process", "uid": str(series), "uid_type": "study",
                                             "triggered_rules": {"tsc-outcome": True},
                                             "applied_rule": "tsc-outcome", "mrn": "", "acc": ""},
            "process": {"module_name": "tsc-outcome", "module_config": {}, "settings": module_settings,
                        "retain_input_images": False},
            "dispatch": {"target_name": ["pacs"]}, "study": {}}
    (folder_in / "task.json").write_text(json.dumps(task))
    _world_readable(tmp)
    _read_only(folder_in)
    folder_out.chmod(0o777)  # mercure: (folder / "out").chmod(0o777)
    return folder_in, folder_out


def gateway_layout(tmp: Path, files: list[Path]) -> tuple[Path, Path]:
    """The Informatics Gateway's ``<study>/<series>/<sop>.dcm`` payload tree; empty output."""
    folder_in, folder_out = tmp / "var" / "monai" / "input", tmp / "var" / "monai" / "output"
    folder_out.mkdir(parents=True)
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        target = folder_in / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    _world_readable(tmp)
    _read_only(folder_in)
    folder_out.chmod(0o777)
    return folder_in, folder_out


def _as_foreign(*cmd: str) -> list[str]:
    return ["setpriv", f"--reuid={FOREIGN_UID}", f"--regid={FOREIGN_UID}", "--clear-groups", *cmd]


def _interpreter() -> tuple[str, list[str]]:
    """An interpreter the foreign user may run, and the site-packages it needs on PYTHONPATH.

    In the MAP image Python is world-executable; a development interpreter may sit in a
    private home folder (pyenv under /root), in which case the system Python of the same
    version runs with the virtual environment's site-packages.
    """
    if subprocess.run(_as_foreign("test", "-x", sys.executable), capture_output=True).returncode == 0:
        return sys.executable, []
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/bin")
    if system is None:
        pytest.skip("no interpreter the foreign user may execute")
    import sysconfig
    return system, [sysconfig.get_paths()["purelib"]]


def run_as_platform(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m app`` as the MAP's command, as UID 12345, cwd ``/``, HOME not writable."""
    exe, site = _interpreter()
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.pathsep.join([str(REPO), *site]),
            "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    cmd = _as_foreign("bash", "-c", 'ulimit -s 32768; exec "$0" -m app', exe)
    return subprocess.run(cmd, cwd="/", env={**base, **env}, capture_output=True, text=True, timeout=400)


def _srs(folder: Path) -> list:
    out = []
    for f in folder.rglob("*"):
        if f.is_file():
            ds = dcmread(f)
            if str(ds.SOPClassUID).startswith(SR_PREFIX):
                out.append(ds)
    return out


def _mercure_env(folder_in: Path, folder_out: Path, models: Path, policy: str,
                 config: Path) -> dict[str, str]:
    return {"MERCURE_IN_DIR": str(folder_in), "MERCURE_OUT_DIR": str(folder_out),
            "MONAI_INPUTPATH": str(folder_in), "MONAI_OUTPUTPATH": str(folder_out),
            "HOLOSCAN_INPUT_PATH": str(folder_in), "HOLOSCAN_OUTPUT_PATH": str(folder_out),
            "HOLOSCAN_MODEL_PATH": str(models), "TSC_EXIT_CODE_POLICY": policy, "TSC_APP_CONFIG": str(config)}


@needs_root
def test_mercure_module_analysed_study(tmp_path: Path, models: Path, app_config: Path) -> None:
    study_uid, files = _study(tmp_path, 31)
    folder_in, folder_out = mercure_layout(tmp_path, files, {})
    before = sorted(p.name for p in folder_in.iterdir())
    result = run_as_platform(_mercure_env(folder_in, folder_out, models, "sr-written", app_config))
    assert result.returncode == 0, result.stderr[-3000:]
    (sr,) = _srs(folder_out)
    assert read_result_sr(sr).analysed and sr.StudyInstanceUID == study_uid
    assert sorted(p.name for p in folder_in.iterdir()) == before  # input untouched
    assert all(p.stat().st_uid == FOREIGN_UID for p in folder_out.rglob("*"))


@needs_root
def test_mercure_module_not_analysable_study_still_dispatches_its_sr(tmp_path: Path, models: Path,
                                                                    app_config: Path) -> None:
    study_uid, files = _study(tmp_path, 32, flair=False)
    folder_in, folder_out = mercure_layout(tmp_path, files, {})
    env = _mercure_env(folder_in, folder_out, models, "sr-written", app_config)
    result = run_as_platform(env)
    # mercure dispatches the outputs only after exit 0: the not-analysable SR must get there
    assert result.returncode == 0, result.stderr[-3000:]
    (sr,) = _srs(folder_out)
    assert not read_result_sr(sr).analysed and sr.StudyInstanceUID == study_uid
    # the detailed policy would have made mercure drop it (exit 2 = failed module)
    for f in folder_out.iterdir():
        f.unlink()
    detailed = run_as_platform({**env, "TSC_EXIT_CODE_POLICY": "detailed"})
    assert detailed.returncode == 2 and len(_srs(folder_out)) == 1


@needs_root
def test_monai_deploy_workflow_task_signals_through_its_mandatory_output(tmp_path: Path, models: Path,
                                                                         app_config: Path) -> None:
    study_uid, files = _study(tmp_path, 33)
    folder_in, folder_out = gateway_layout(tmp_path, files)
    env = {"HOLOSCAN_INPUT_PATH": str(folder_in), "HOLOSCAN_OUTPUT_PATH": str(folder_out),
           "HOLOSCAN_MODEL_PATH": str(models), "TSC_APP_CONFIG": str(app_config)}
    result = run_as_platform(env)
    assert result.returncode == 0, result.stderr[-3000:]
    (sr,) = _srs(folder_out)  # the mandatory artifact the workflow definition declares
    assert read_result_sr(sr).analysed and sr.StudyInstanceUID == study_uid
    # Nothing readable: the app exits (any exit is "succeeded" there) without an SR, and the
    # missing mandatory output is what fails the task.
    junk_in = tmp_path / "junk" / "input"
    junk_in.mkdir(parents=True)
    (junk_in / "not-dicom.dcm").write_bytes(b"\0" * 300)
    junk_out = tmp_path / "junk" / "output"
    junk_out.mkdir()
    _world_readable(tmp_path / "junk")
    _read_only(junk_in)
    junk_out.chmod(0o777)
    failed = run_as_platform({**env, "HOLOSCAN_INPUT_PATH": str(junk_in), "HOLOSCAN_OUTPUT_PATH": str(junk_out)})
    assert failed.returncode != 0 and _srs(junk_out) == []
