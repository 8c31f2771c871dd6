"""`monai-deploy package` accepts app.yaml and the app folder (holoscan-cli 4.2.0).

There is no Docker engine here, so these tests run the packager's own code path
(``holoscan_cli.packager.packager._package_application``) up to, not including,
``docker buildx build``: the CLI parser, ``PackagingArguments`` (reads app.yaml,
scans the models, resolves SDK versions and base images from the pinned artifact
manifest), the app.json / pkg.json manifests, and the build context with its
rendered Dockerfile. The command line is the one scripts/package_map.py runs.
Then the image's /opt/holoscan tree is rebuilt from that context and the app is
started the way the MAP starts it (``python3 /opt/holoscan/app``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import yaml

pytest.importorskip("holoscan_cli", reason="holoscan-cli 4.2.0 (the MAP packager) is not installed")

from holoscan_cli.__main__ import parse_args  # noqa: E402
from holoscan_cli.common.artifact_sources import ArtifactSources  # noqa: E402
from holoscan_cli.packager import packager  # noqa: E402
from holoscan_cli.packager.arguments import PackagingArguments  # noqa: E402
from holoscan_cli.packager.container_builder import PythonAppBuilder  # noqa: E402

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
APP_YAML = REPO / "app.yaml"
ARTIFACTS = REPO / "packaging" / "holoscan-artifacts-4.2.0.json"
TAG = "tsc-epilepsy-outcome:0.1.0"
MAP_ROOT = "/opt/holoscan"
MODEL_SET = "tsc_model_set"


def _load_packaging_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("package_map", REPO / "scripts" / "package_map.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


package_map = _load_packaging_script()


def _write_model_set(folder: Path) -> None:
    """A small model-set folder with the repository's layout (manifest at the top, hd_bet/ inside)."""
    (folder / "weights").mkdir(parents=True)
    (folder / "manifest.yaml").write_text("format: tsc-model-set/1\nname: packaging-test\n")
    (folder / "MODEL_CARD.md").write_text("# packaging test\n")
    (folder / "weights" / "flair_wae.fold0.pt").write_bytes(b"\0" * 64)
    hdbet = folder / "hd_bet" / "release_2.0.0"
    (hdbet / "fold_all").mkdir(parents=True)
    (hdbet / "dataset.json").write_text("{}")
    (hdbet / "plans.json").write_text("{}")
    (hdbet / "fold_all" / "checkpoint_final.pth").write_bytes(b"\0" * 64)


@dataclass
class Packaged:
    context: Path           # the docker build context the packager prepared
    app_json: dict
    pkg_json: dict
    dockerfile: str
    arguments: PackagingArguments


def _package(argv: list[str], context: Path, monkeypatch: pytest.MonkeyPatch) -> Packaged:
    """Everything `monai-deploy package` does before `docker buildx build`."""
    # The SDK (MONAI Deploy vs Holoscan) is taken from the program name, as when run as `monai-deploy`.
    monkeypatch.setattr(sys, "argv", list(argv))
    args = parse_args(argv)
    assert args.command == "package"
    context.mkdir(parents=True)
    arguments = PackagingArguments(args, str(context))
    packager._create_app_manifest(arguments.application_manifest, str(context))
    packager._create_package_manifest(arguments.package_manifest, str(context))
    builder = PythonAppBuilder(arguments.build_parameters, str(context))  # copies app, models, lib
    assert len(arguments.platforms) == 1
    # What builder.build() does before handing the context to Docker.
    builder._copy_supporting_files(arguments.platforms[0])
    dockerfile = Path(builder._write_dockerfile(arguments.platforms[0])).read_text()
    return Packaged(
        context=context,
        app_json=json.loads((context / "map" / "app.json").read_text()),
        pkg_json=json.loads((context / "map" / "pkg.json").read_text()),
        dockerfile=dockerfile,
        arguments=arguments,
    )


@pytest.fixture(scope="module")
def app_config() -> dict:
    return yaml.safe_load(APP_YAML.read_text())


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Packaged:
    if not (REPO / "app" / "__main__.py").is_file():
        pytest.fail("app/__main__.py is missing: the packager only accepts a Python app folder that has one")
    tmp = tmp_path_factory.mktemp("map")
    models = tmp / "models"
    _write_model_set(models)
    staged = package_map.stage(tmp / "stage", models=models)
    argv = package_map.package_argv(staged, TAG, "x86_64", ARTIFACTS,
                                    ["--build-cache", str(tmp / "build-cache")])
    with pytest.MonkeyPatch.context() as mp:
        return _package(argv, tmp / "context", mp)


# --- the pinned CLI itself ---------------------------------------------------------------------

def test_monai_deploy_console_script_runs_package_help() -> None:
    exe = Path(sys.executable).parent / "monai-deploy"
    assert exe.is_file(), f"no monai-deploy console script beside {sys.executable} (holoscan-cli 4.2.0 pin)"
    done = subprocess.run([str(exe), "package", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for option in ("--config", "--models", "--add", "--platform", "--tag", "--source"):
        assert option in done.stdout, f"`monai-deploy package --help` does not mention {option}"


def test_pinned_artifact_manifest_matches_installed_holoscan() -> None:
    cli_version = importlib.metadata.version("holoscan-cli")
    sources = ArtifactSources(13)
    sources.load(str(ARTIFACTS))  # runs the CLI's own validation
    assert list(sources.holoscan_versions) == [cli_version]
    assert sources.wheel_package_version(cli_version) == importlib.metadata.version("holoscan-cu13")
    assert sources.base_image(cli_version)["dgpu"].startswith("nvcr.io/nvidia/cuda:")


# --- manifests ---------------------------------------------------------------------------------

def test_app_manifest(packaged: Packaged, app_config: dict) -> None:
    app = packaged.app_json
    assert app["apiVersion"] == "1.0.0"
    assert app["version"] == str(app_config["application"]["version"])
    assert app["sdk"] == "monai-deploy"
    assert app["sdkVersion"] == importlib.metadata.version("monai-deploy-app-sdk")
    assert json.loads(app["command"]) == ["python3", f"{MAP_ROOT}/app"]
    assert app["input"] == {"path": "input/", "formats": app_config["application"]["input-formats"]}
    assert app["output"] == {"path": "output/", "formats": app_config["application"]["output-formats"]}
    assert app["input"]["formats"] and app["output"]["formats"], "formats are null: check the app.yaml keys"
    env = app["environment"]
    assert env["HOLOSCAN_APPLICATION"] == f"{MAP_ROOT}/app"
    assert env["HOLOSCAN_MODEL_PATH"] == f"{MAP_ROOT}/models"
    assert env["HOLOSCAN_INPUT_PATH"] == "input/" and env["HOLOSCAN_OUTPUT_PATH"] == "output/"
    assert app["workingDirectory"] == "/var/holoscan"
    assert app["readiness"] is None and app["liveness"] is None  # only Holoscan-SDK apps get gRPC probes


def test_package_manifest_lists_resources_and_models(packaged: Packaged, app_config: dict) -> None:
    pkg = packaged.pkg_json
    assert pkg["version"] == str(app_config["application"]["version"])
    assert pkg["applicationRoot"] == f"{MAP_ROOT}/app"
    assert pkg["modelRoot"] == f"{MAP_ROOT}/models"
    assert pkg["resources"] == app_config["resources"]
    assert {"cpu", "memory", "gpu"} <= set(pkg["resources"])
    assert pkg["models"] == {MODEL_SET: f"{MAP_ROOT}/models/{MODEL_SET}"}
    assert pkg["platformConfig"] == "dgpu"


def test_image_tag_for_x86_64(packaged: Packaged) -> None:
    """The name `monai-deploy run` / `docker run` needs (documented in docs/deployment.md)."""
    assert [p.tag for p in packaged.arguments.platforms] == [
        "tsc-epilepsy-outcome-x64-workstation-dgpu-linux-amd64:0.1.0"]


def test_title_and_version_reach_the_image_labels(packaged: Packaged, app_config: dict) -> None:
    title = app_config["application"]["title"]
    assert packaged.arguments.build_parameters.title == title
    labels = dict(re.findall(r'^LABEL ([\w.\-]+)="(.*)"$', packaged.dockerfile, flags=re.M))
    # Jinja autoescaping turns "(" etc. into entities only for &<>"'; the title has none.
    assert labels["org.opencontainers.image.title"] == title
    assert labels["org.opencontainers.image.version"] == str(app_config["application"]["version"])
    assert labels["org.monai.deploy.app-sdk"] == importlib.metadata.version("monai-deploy-app-sdk")


# --- build context and Dockerfile --------------------------------------------------------------

def test_pip_requirements_come_from_app_requirements_txt(packaged: Packaged) -> None:
    def requirement_lines(text: str) -> list[str]:
        return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]

    packaged_reqs = requirement_lines((packaged.context / "pip" / "requirements.txt").read_text())
    assert packaged_reqs == requirement_lines((REPO / "app" / "requirements.txt").read_text())
    assert "torch==2.13.0" in packaged_reqs
    assert "RUN pip install --no-cache-dir --user -r /tmp/requirements.txt" in packaged.dockerfile
    sdk = importlib.metadata.version("monai-deploy-app-sdk")
    assert f"RUN pip install monai-deploy-app-sdk=={sdk}" in packaged.dockerfile


def test_models_are_copied_once_into_the_models_path(packaged: Packaged) -> None:
    models = packaged.context / "models"
    assert (models / MODEL_SET / "manifest.yaml").is_file()
    assert (models / MODEL_SET / "hd_bet" / "release_2.0.0" / "fold_all" / "checkpoint_final.pth").is_file()
    assert len(list(models.rglob("checkpoint_final.pth"))) == 1
    assert len(list(models.rglob("flair_wae.fold0.pt"))) == 1
    assert re.search(rf"^COPY \./models\s+{MAP_ROOT}/models/?$", packaged.dockerfile, flags=re.M)


def test_operators_package_is_added_under_lib(packaged: Packaged) -> None:
    for package in package_map.LIB_PACKAGES:
        assert (packaged.context / "lib" / package / "__init__.py").is_file(), package
    assert (packaged.context / "lib" / "operators" / "datatypes.py").is_file()
    assert not list((packaged.context / "lib").rglob("__pycache__"))
    assert re.search(rf"^COPY \./lib {MAP_ROOT}/lib$", packaged.dockerfile, flags=re.M)
    pythonpath = re.search(r"^ENV PYTHONPATH=(.*)$", packaged.dockerfile, flags=re.M)
    assert pythonpath and f"{MAP_ROOT}/lib" in pythonpath.group(1).split(":")


def test_dockerfile_base_image_user_and_entrypoint(packaged: Packaged) -> None:
    sources = json.loads(ARTIFACTS.read_text())
    base = next(iter(sources.values()))["holoscan"]["base-images"]["dgpu"]
    assert f"FROM {base} AS base" in packaged.dockerfile
    assert "USER $UNAME" in packaged.dockerfile  # the app runs as the non-root user the packager creates
    assert 'ENTRYPOINT ["/var/holoscan/tools"]' in packaged.dockerfile
    assert (packaged.context / "app.config").read_bytes() == APP_YAML.read_bytes()
    assert (packaged.context / "app" / "__main__.py").is_file()


def test_add_copies_a_folders_contents_not_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why scripts/package_map.py stages lib/operators: `--add operators` would flatten the package."""
    argv = ["monai-deploy", "package", str(REPO / "app"), "--config", str(APP_YAML),
            "--add", str(REPO / "operators"), "--tag", TAG, "--platform", "x86_64",
            "--source", str(ARTIFACTS), "--build-cache", str(tmp_path / "cache")]
    result = _package(argv, tmp_path / "context", monkeypatch)
    lib = result.context / "lib"
    assert (lib / "datatypes.py").is_file()
    assert not (lib / "operators").exists()


# --- the image's /opt/holoscan tree, started as the MAP starts it ------------------------------

def _image_tree(packaged: Packaged, root: Path) -> tuple[Path, dict[str, str]]:
    """Rebuild /opt/holoscan from the build context (the Dockerfile's COPY lines) and its environment."""
    import shutil

    opt = root / MAP_ROOT.lstrip("/")
    for part in ("app", "lib", "models"):
        shutil.copytree(packaged.context / part, opt / part)
    match = re.search(r"^ENV PYTHONPATH=(.*)$", packaged.dockerfile, flags=re.M)
    assert match
    entries = [e.replace(MAP_ROOT, str(opt)) for e in match.group(1).split(":") if e and e != "$PYTHONPATH"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLOSCAN_", "PYTHON"))}
    env.update(PYTHONPATH=os.pathsep.join(entries), HOLOSCAN_MODEL_PATH=str(opt / "models"),
               HOLOSCAN_INPUT_PATH=str(root / "input"), HOLOSCAN_OUTPUT_PATH=str(root / "output"))
    return opt, env


def test_packaged_app_starts_from_the_image_layout(packaged: Packaged, tmp_path: Path) -> None:
    opt, env = _image_tree(packaged, tmp_path / "image")
    done = subprocess.run([sys.executable, str(opt / "app"), "--help"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HOLOSCAN_MODEL_PATH" in done.stdout


def test_packaged_app_imports_its_packages_from_the_image(packaged: Packaged, tmp_path: Path) -> None:
    """`app` and `operators` must resolve inside /opt/holoscan, not from this checkout."""
    opt, env = _image_tree(packaged, tmp_path / "image")
    probe = (
        "import runpy, sys\n"
        "app_dir = sys.argv[1]\n"
        "sys.argv = [app_dir, '--help']\n"
        "try:\n"
        "    runpy.run_path(app_dir, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('ORIGIN', sys.modules['app'].__file__)\n"
        "print('ORIGIN', sys.modules['operators'].__file__)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(opt / "app")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    origins = [Path(line.split(" ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("ORIGIN ")]
    assert origins == [opt / "app" / "__init__.py", opt / "lib" / "operators" / "__init__.py"]


def test_repository_models_folder_packages_as_one_model_set(tmp_path: Path) -> None:
    """The real models/ folder (when it has content) becomes one model, copied once."""
    models = REPO / "models"
    if not models.is_dir() or not any(p.is_dir() or p.name == "manifest.yaml" for p in models.iterdir()):
        pytest.skip("models/ holds no model set in this checkout (none exported yet)")
    from holoscan_cli.packager.models import Models

    staged = package_map.stage(tmp_path / "stage", models=models)
    assert staged.models is not None
    found = Models().build(staged.models)
    if (models / "manifest.yaml").is_file():
        assert set(found) == {MODEL_SET}
        assert (staged.models / MODEL_SET / "manifest.yaml").is_file()
    else:
        assert set(found) == {p.name for p in models.iterdir() if p.is_dir() and p.name != "__pycache__"}
