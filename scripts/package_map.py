#!/usr/bin/env python3
"""Stage the repository for `monai-deploy package` and build the MAP.

Usage (from the repository root, with the project's virtualenv active):

    python scripts/package_map.py --tag tsc-epilepsy-outcome:0.1.0 [--platform x86_64]
                                  [--models models] [--out build/map] [--dry-run]
                                  [-- <extra monai-deploy package options>]

Why staging instead of `monai-deploy package app --models models --add operators`
(holoscan-cli 4.2.0 behaviour, read from its sources and checked by
tests/integration/test_map_packaging.py):

* ``--add DIR`` copies the *contents* of DIR into /opt/holoscan/lib, so
  ``--add operators`` would leave ``datatypes.py`` etc. at the top of lib and
  ``import operators`` would fail. We stage ``<out>/lib/operators`` (and
  ``<out>/lib/synthetic`` for ``python -m app demo``) and add ``<out>/lib``.
* ``--models DIR`` registers every sub-folder of DIR as one model, and DIR itself
  as a further model when it holds files at its top (e.g. ``manifest.yaml``);
  that copy includes the sub-folders again, so every weight file would be
  packaged twice. We stage the model set whole as ``<out>/models/tsc_model_set/``
  (manifest, weights, card, hd_bet/): in the MAP it is
  ``$HOLOSCAN_MODEL_PATH/tsc_model_set/``, one level below the models path.

Only the standard library is used, so the script also runs outside the venv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARTIFACT_SOURCES = REPO / "packaging" / "holoscan-artifacts-4.2.0.json"
DEFAULT_MODEL_SET_NAME = "tsc_model_set"
# Top-level packages the app imports besides itself (`synthetic` only for `python -m app demo`).
LIB_PACKAGES = ("operators", "synthetic")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link weight files into the staging tree (no second copy of GBs); copy across filesystems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@dataclass(frozen=True)
class StagedMap:
    """What `monai-deploy package` is pointed at."""

    application: Path
    config: Path
    lib: Path
    models: Path | None


def stage(out: Path, *, repo: Path = REPO, models: Path | None = None,
          model_set_name: str = DEFAULT_MODEL_SET_NAME) -> StagedMap:
    """Copy the importable packages and the models into the layout the packager expects.

    Args:
        out: Staging folder (emptied first).
        repo: Repository root holding ``app/``, ``operators/``, ``synthetic/`` and ``app.yaml``.
        models: Models folder to package (default ``<repo>/models``); a folder with
            neither a manifest nor sub-folders packages no models.
        model_set_name: Folder name the model set gets under the MAP's models path
            when ``models`` has ``manifest.yaml`` at its top; otherwise each
            sub-folder is packaged as one model.

    Returns:
        The paths to pass as application, ``--config``, ``--add`` and ``--models``.
    """
    out = out.resolve()
    if out.exists():
        shutil.rmtree(out)
    lib = out / "lib"
    for package in LIB_PACKAGES:
        shutil.copytree(repo / package, lib / package, ignore=_IGNORE)

    models = (repo / "models") if models is None else models
    staged_models: Path | None = None
    if (models / "manifest.yaml").is_file():
        # The folder itself is the model set (manifest.yaml at its top, hd_bet/ inside):
        # package it whole as one named model, so the packager does not also register
        # (and copy a second time) each of its sub-folders.
        staged_models = out / "models"
        staged_models.mkdir(parents=True)
        shutil.copytree(models, staged_models / model_set_name, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns("__pycache__", ".gitkeep"))
    elif models.is_dir():
        # One model per sub-folder (model sets, hd_bet/); loose files such as README.md stay out.
        subs = sorted(p for p in models.iterdir() if p.is_dir() and p.name != "__pycache__")
        if subs:
            staged_models = out / "models"
            for sub in subs:
                shutil.copytree(sub, staged_models / sub.name, copy_function=_link_or_copy, ignore=_IGNORE)
    return StagedMap(application=repo / "app", config=repo / "app.yaml", lib=lib, models=staged_models)


def package_argv(staged: StagedMap, tag: str, platform: str = "x86_64",
                 source: Path | None = ARTIFACT_SOURCES, extra: list[str] | None = None) -> list[str]:
    """The `monai-deploy package` command line for a staged tree (argv[0] included)."""
    argv = ["monai-deploy", "package", str(staged.application), "--config", str(staged.config),
            "--add", str(staged.lib), "--tag", tag, "--platform", platform]
    if staged.models is not None:
        argv += ["--models", str(staged.models)]
    if source is not None:
        argv += ["--source", str(source)]
    return argv + list(extra or [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default="tsc-epilepsy-outcome:0.1.0")
    parser.add_argument("--platform", default="x86_64")
    parser.add_argument("--models", type=Path, default=REPO / "models")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "map")
    parser.add_argument("--online-source", action="store_true",
                        help="let holoscan-cli download its artifact manifest instead of the pinned copy")
    parser.add_argument("--dry-run", action="store_true", help="stage and print the command only")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: passed to monai-deploy package")
    args = parser.parse_args(argv)
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra

    staged = stage(args.out, models=args.models)
    command = package_argv(staged, args.tag, args.platform,
                           None if args.online_source else ARTIFACT_SOURCES, extra)
    beside = Path(sys.executable).parent / "monai-deploy"  # the venv's pinned holoscan-cli first
    exe = str(beside) if beside.exists() else (shutil.which("monai-deploy") or "monai-deploy")
    print(" ".join([exe, *command[1:]]))
    if args.dry_run:
        return 0
    return subprocess.call([exe, *command[1:]])


if __name__ == "__main__":
    sys.exit(main())
