"""Argument parsing and the entry points behind ``python -m app``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from operators.errors import ModelConfigurationError, PipelineError

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_ANALYSABLE = 2
DEMO_SEED = 20260
SUBCOMMANDS = ("serve", "status", "demo")


def _map_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app",
        description="Analyse one study folder (MONAI Deploy convention). Subcommands: "
                    "serve (DICOM node), status (node status), demo (run on a synthetic study).",
        epilog="Missing -i/-o/-m fall back to HOLOSCAN_INPUT_PATH, HOLOSCAN_OUTPUT_PATH and "
               "HOLOSCAN_MODEL_PATH, then to ./input, ./output and ./models. Exit codes: 0 analysed, "
               "2 not analysable (a short SR says why), 1 configuration or internal error.")
    p.add_argument("-i", "--input", type=Path, help="study folder (DICOM files, optional clinical.json)")
    p.add_argument("-o", "--output", type=Path, help="folder for the result DICOM objects")
    p.add_argument("-m", "--model", type=Path, help="model-set folder (manifest.yaml, weights, hd_bet/)")
    p.add_argument("-w", "--workdir", type=Path, help="work folder (accepted for MONAI Deploy compatibility)")
    p.add_argument("-c", "--config", type=Path, default=os.environ.get("TSC_APP_CONFIG"),
                   help="application configuration YAML (default: $TSC_APP_CONFIG)")
    p.add_argument("-l", "--log-level", type=str.upper, default=None,
                   choices=["DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"],
                   help="log level (default WARNING; INFO with -v)")
    p.add_argument("-v", "--verbose", action="store_true", help="show the pipeline's and the graph's logs")
    return p


def _setup_logging(level: str | None, verbose: bool) -> None:
    chosen = level or ("INFO" if verbose else "WARNING")
    chosen = {"WARN": "WARNING"}.get(chosen, chosen)
    logging.basicConfig(level=getattr(logging, chosen),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # Holoscan's own logger reads this before the graph starts; its error lines repeat what
    # the one-line reason below says, so they are shown only with -v.
    os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "INFO" if verbose else "CRITICAL")


def _resolve(value: Path | None, env: str, default: str) -> Path:
    return Path(value or os.environ.get(env) or default)


def run_study(input_dir: Path, output_dir: Path, models_dir: Path, config_path: Path | None) -> int:
    """Run the operator graph on one study and print the outcome; returns the exit code."""
    from app.app import TscOutcomeApp
    from app.config import ConfigurationError, load_app_config
    from app.pipeline import describe_result, write_not_analysable

    try:
        config = load_app_config(config_path)
    except PipelineError as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        return EXIT_ERROR
    output_dir.mkdir(parents=True, exist_ok=True)
    if not input_dir.is_dir():
        print(f"error: input folder {input_dir} does not exist", file=sys.stderr)
        return EXIT_ERROR
    application = TscOutcomeApp(input_dir=input_dir, output_dir=output_dir, models_dir=models_dir, config=config)
    try:
        application.run()
    except PipelineError as exc:
        error, code = exc, (EXIT_ERROR if isinstance(exc, (ModelConfigurationError, ConfigurationError))
                            else EXIT_NOT_ANALYSABLE)
    except Exception as exc:  # noqa: BLE001 - the radiologist still gets an SR saying the analysis failed
        logger.exception("internal error")
        error, code = PipelineError(f"internal error: {type(exc).__name__}", stage="internal"), EXIT_ERROR
    else:
        print(describe_result(application.result))
        return EXIT_OK
    # The radiologist is not left waiting: whatever failed, the study gets a short SR saying so.
    written = write_not_analysable(input_dir, output_dir, error, config)
    print(f"NOT ANALYSABLE {error}", file=sys.stderr)
    for path in written:
        print(f"not-analysable SR: {path}")
    return code


def main_map(argv: Sequence[str]) -> int:
    """``python -m app [-i IN -o OUT -m MODELS] [-c CONFIG] [-v]``."""
    args = _map_parser().parse_args(argv)
    _setup_logging(args.log_level, args.verbose)
    return run_study(_resolve(args.input, "HOLOSCAN_INPUT_PATH", "input"),
                     _resolve(args.output, "HOLOSCAN_OUTPUT_PATH", "output"),
                     _resolve(args.model, "HOLOSCAN_MODEL_PATH", "models"),
                     args.config)


def main_demo(argv: Sequence[str]) -> int:
    """``python -m app demo``: generate the embedded synthetic study and analyse it."""
    p = argparse.ArgumentParser(prog="python -m app demo",
                                description="Generate the embedded synthetic study (fixed seed) and run the app on it.")
    p.add_argument("--work", type=Path, default=Path("demo-output"), help="folder for the study and the results")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="synthetic subject seed")
    p.add_argument("-m", "--model", type=Path, default=Path(__file__).resolve().parent.parent / "models",
                   help="model-set folder (default: the repository's models/)")
    p.add_argument("-c", "--config", type=Path, default=None, help="application configuration YAML")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    _setup_logging(None, args.verbose)

    from synthetic import StudyOptions, generate_study

    study = generate_study(args.work / "studies", args.seed, StudyOptions())
    truth = study.subject
    print(f"synthetic study {study.sid}: {len(study.files)} series in {study.input_dir} "
          f"(ground truth in {study.truth_dir}; true label: "
          f"{'uncontrolled' if truth.label else 'controlled'})")
    return run_study(study.input_dir, args.work / "results" / study.sid, args.model, args.config)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the MAP run or a subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("serve", "status"):
        from app.node.cli import main as node_main

        return node_main(argv)
    if argv and argv[0] == "demo":
        return main_demo(argv[1:])
    return main_map(argv)
