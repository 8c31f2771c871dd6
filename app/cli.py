"""Argument parsing and the entry points behind ``python -m app``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from operators.errors import PipelineError

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_ANALYSABLE = 2
DEMO_SEED = 20260
SUBCOMMANDS = ("serve", "status", "cleanup", "demo", "prepare-engine")


def _map_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app",
        description="Analyse one study folder (MONAI Deploy convention). Subcommands: "
                    "serve (DICOM node), status (node status), cleanup (spool retention), demo (run on a "
                    "synthetic study), prepare-engine (convert the model set for OpenVINO into its cache, e.g. "
                    "at image build).",
        epilog="Missing -i/-o/-m fall back to HOLOSCAN_INPUT_PATH, HOLOSCAN_OUTPUT_PATH and "
               "HOLOSCAN_MODEL_PATH, then to ./input, ./output and ./models. Exit codes (policy 'detailed'): "
               "0 analysed, 2 not analysable (a short SR says why), 1 configuration or internal error; "
               "policy 'sr-written' (for mercure): 0 whenever an SR was written, else 1.")
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
    p.add_argument("--exit-code-policy", default=os.environ.get("TSC_EXIT_CODE_POLICY", "detailed"),
                   choices=["detailed", "sr-written"],
                   help="what the exit status means (default: $TSC_EXIT_CODE_POLICY or detailed; "
                        "see app/exit_codes.py)")
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
        error, code = exc, (EXIT_ERROR if isinstance(exc, ConfigurationError)
                            else EXIT_NOT_ANALYSABLE)
    except Exception as exc:  # noqa: BLE001 - the radiologist still gets an SR saying the analysis failed
        logger.exception("internal error")
        error, code = PipelineError(f"internal error: {type(exc).__name__}", stage="internal"), EXIT_ERROR
    else:
        outputs = application.result.outputs if application.result is not None else None
        if outputs is None or outputs.sr is not None or not config.outputs.sr:
            print(describe_result(application.result))
            return EXIT_OK
        # the prediction was made but its SR could not be built: a not-analysable SR says so
        print(f"NOT ANALYSABLE [outputs] {outputs.failures.get('sr', 'the result SR was not written')}",
              file=sys.stderr)
        if outputs.not_analysable_sr is not None:
            print(f"not-analysable SR: {outputs.not_analysable_sr}")
        return EXIT_NOT_ANALYSABLE
    # The radiologist is not left waiting: whatever failed, the study gets a short SR saying so.
    written = write_not_analysable(input_dir, output_dir, error, config, folder=application.scanned,
                                   selected_series=application.selected)
    print(f"NOT ANALYSABLE {error}", file=sys.stderr)
    for path in written:
        print(f"not-analysable SR: {path}")
    return code


def main_map(argv: Sequence[str]) -> int:
    """``python -m app [-i IN -o OUT -m MODELS] [-c CONFIG] [-v]``."""
    from app.exit_codes import ExitCodePolicyError, apply_policy, check_policy, now
    from app.platform_env import prepare_platform_environment

    prepare_platform_environment()
    args = _map_parser().parse_args(argv)
    _setup_logging(args.log_level, args.verbose)
    try:
        check_policy(args.exit_code_policy)
    except ExitCodePolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    started, output_dir = now(), _resolve(args.output, "HOLOSCAN_OUTPUT_PATH", "output")
    code = run_study(_resolve(args.input, "HOLOSCAN_INPUT_PATH", "input"), output_dir,
                     _resolve(args.model, "HOLOSCAN_MODEL_PATH", "models"), args.config)
    return apply_policy(code, args.exit_code_policy, output_dir, started)


def show_study(input_dir: Path, models_dir: Path, config_path: Path | None) -> None:
    """Print what the pipeline sees in a study: the series chosen and the preprocessing numbers."""
    from app.config import load_app_config
    from app.pipeline import make_brain_extractor
    from operators.clinical_data import clinical_data_for_study
    from operators.dicom_loading import load_study
    from operators.preprocessing import preprocess
    from operators.series_selection import load_rules, select_series
    from operators.volume_conversion import convert_selected

    config = load_app_config(config_path)
    study = load_study(input_dir)
    selection = select_series(study, load_rules(config.series_rules))
    print(f"{len(study.series)} series in the study:")
    for uid, features in selection.features.items():
        role = next((s.role.value for s in (selection.t2, selection.flair) if s and s.series_instance_uid == uid), "-")
        print(f"  [{role:>5}] #{features['SeriesNumber']} '{features['SeriesDescription']}': "
              f"TR {features['RepetitionTime']} TE {features['EchoTime']} TI {features['InversionTime']}, "
              f"{features['slices']} slices {features['orientation']}, {features['ImageType']}")
    for role, explanation in selection.explanations.items():
        print(f"  {role.value}: {explanation.rule}")
    clinical = clinical_data_for_study(study)
    age = clinical.age_at_imaging_months.value if clinical.age_at_imaging_months else None
    pre = preprocess(convert_selected(selection.t2), convert_selected(selection.flair),
                     extractor=make_brain_extractor(config, models_dir), patient_age_months=age)
    print(f"preprocessing: registration NMI {pre.registration_nmi:.3f}, brain {pre.brain_volume_ml:.0f} ml "
          f"({pre.brain_extraction_method}), {pre.timings_s.get('total', 0):.1f} s; quality flags: "
          + (", ".join(f"{f.code} ({f.severity})" for f in pre.flags) or "none"))


def main_demo(argv: Sequence[str]) -> int:
    """``python -m app demo``: generate the embedded synthetic study, show it, and analyse it."""
    p = argparse.ArgumentParser(prog="python -m app demo",
                                description="Generate the embedded synthetic study (fixed seed), show what the "
                                            "pipeline sees in it, and run the app on it when a model set is installed.")
    p.add_argument("--work", type=Path, default=Path("demo-output"), help="folder for the study and the results")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="synthetic subject seed")
    p.add_argument("-m", "--model", type=Path, default=Path(__file__).resolve().parent.parent / "models",
                   help="model-set folder (default: the repository's models/)")
    p.add_argument("-c", "--config", type=Path, default=None, help="application configuration YAML")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    _setup_logging(None, args.verbose)

    from app.pipeline import find_model_set
    from synthetic import StudyOptions, generate_study

    study = generate_study(args.work / "studies", args.seed, StudyOptions(decoys=True, descriptions="random"))
    print(f"synthetic study {study.sid} in {study.input_dir} (ground truth in {study.truth_dir}; "
          f"true one-year outcome: {'uncontrolled' if study.label else 'controlled'})")
    show_study(study.input_dir, args.model, args.config)
    try:
        find_model_set(args.model)
    except PipelineError as exc:
        print(f"no prediction: {exc.reason}")
        return EXIT_OK
    return run_study(study.input_dir, args.work / "results" / study.sid, args.model, args.config)


def main_prepare_engine(argv: Sequence[str]) -> int:
    """Load the model set once with the configured engine: fills the OpenVINO IR cache."""
    p = argparse.ArgumentParser(prog="python -m app prepare-engine",
                                description="Convert every fold network of the model set, and HD-BET's networks, "
                                            "into the OpenVINO IR cache (openvino_cache / $TSC_OPENVINO_CACHE), so "
                                            "that later starts only verify and compile. Run it where the cache will "
                                            "be read from (e.g. in the image build, with a cache folder outside the "
                                            "model set).")
    p.add_argument("-m", "--model", type=Path, default=Path(os.environ.get("HOLOSCAN_MODEL_PATH") or "models"))
    p.add_argument("-c", "--config", type=Path, default=os.environ.get("TSC_APP_CONFIG"))
    args = p.parse_args(argv)
    _setup_logging("INFO", False)
    from app.config import load_app_config, runner_options
    from app.pipeline import find_model_set, load_runner, make_brain_extractor

    try:
        config = load_app_config(args.config)
        runner = load_runner(args.model, options=runner_options(config))
        extractor = make_brain_extractor(config, find_model_set(args.model))
    except PipelineError as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        return EXIT_ERROR
    print(f"engine {runner.engine_description}; {len(runner.members)} members ready "
          f"(converted in {runner.conversion_s:.1f} s, loaded in {runner.load_s:.1f} s); "
          f"brain extraction: {extractor.method}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the MAP run or a subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("serve", "status", "cleanup"):
        from app.node.cli import main as node_main

        return node_main(argv)
    if argv and argv[0] == "demo":
        return main_demo(argv[1:])
    if argv and argv[0] == "prepare-engine":
        return main_prepare_engine(argv[1:])
    return main_map(argv)
