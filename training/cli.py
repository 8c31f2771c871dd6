"""Command line of the training pipeline: ``python -m training <command>``.

Commands (typical order)::

    prepare   study folders -> case files, with the app's own ingestion + preprocessing
    train     k-fold cross-validation per member (resumable: run it again to continue)
    fuse      fusion weights on out-of-fold predictions (0.1 steps) + out-of-fold metrics
    export    write the model set folder (manifest.yaml + weights + MODEL_CARD.md) the app loads
    evaluate  score held-out case files with a model set exactly as the app does
    card      (re)write a model set's MODEL_CARD.md, e.g. after evaluate
    all       train + fuse + export

Example (demo set)::

    python -m training prepare --studies synth/train --out cases/train --config demo
    python -m training all --config demo --cases cases/train --workdir work/demo --out models/demo
    python -m training prepare --studies synth/test --out cases/test --config demo
    python -m training evaluate --model-set models/demo --cases cases/test --out work/demo/eval
    python -m training card --config demo --workdir work/demo --model-set models/demo \\
        --evaluation work/demo/eval/evaluation.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger("training")


def training_summary(workdir: Path, members: Sequence[str], folds: int,
                     repeats: int = 1) -> dict[str, list[dict[str, Any]]]:
    """Fold summaries of finished members (every repetition), read from the work folder."""
    from training.trainer import fold_stem

    out: dict[str, list[dict[str, Any]]] = {}
    for m in members:
        out[m] = []
        for r in range(repeats):
            for k in range(folds):
                p = workdir / "members" / m / f"{fold_stem(k, r)}.oof.json"
                if p.is_file():
                    out[m].append(json.loads(p.read_text())["summary"])
    return out


def _card_inputs(config, workdir: Path, evaluation: Path | None) -> dict[str, Any]:
    """Everything the card needs from the work folder and an evaluation (held-out status checked here)."""
    from training.provenance import held_out_check

    fusion = json.loads((workdir / "fusion.json").read_text())
    ev = json.loads(evaluation.read_text()) if evaluation else None
    split = json.loads((workdir / "split.json").read_text())
    runs = workdir / "provenance.json"
    return {"fusion": fusion, "evaluation": ev,
            "training": training_summary(workdir, list(config.members), config.folds, config.repeats),
            "provenance": json.loads(runs.read_text()) if runs.is_file() else None,
            "held_out": held_out_check(ev.get("cases") or [], split.get("cases") or {}) if ev else None}


def _copy_figures(workdir: Path, evaluation: Path | None, model_set_dir: Path) -> list[str]:
    """Copy the ROC and calibration PNGs into ``<model set>/figures/``; return their relative paths."""
    import shutil

    pairs = {"figures/oof_roc.png": workdir / "oof_roc.png",
             "figures/oof_calibration.png": workdir / "oof_calibration.png"}
    if evaluation:
        pairs.update({"figures/heldout_roc.png": evaluation.parent / "roc.png",
                      "figures/heldout_calibration.png": evaluation.parent / "calibration.png"})
    done = []
    for rel, src in pairs.items():
        if src.is_file():
            (model_set_dir / "figures").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, model_set_dir / rel)
            done.append(rel)
    return done


def _card_text(config, workdir: Path, evaluation: Path | None, size_mb: float | None, data: str,
               identity: str | None = None, figures: Sequence[str] = (), same_scoring: Any = None) -> str:
    from training.model_card import render_model_card

    inputs = _card_inputs(config, workdir, evaluation)
    return render_model_card(config, inputs["training"], inputs["fusion"], inputs["evaluation"], size_mb, data,
                             provenance=inputs["provenance"], held_out=inputs["held_out"], identity=identity,
                             figures=figures, same_scoring=same_scoring)


def _app_config(args: argparse.Namespace) -> Any:
    """The app's configuration (``--app-config``), with ``--brain-extraction``/``--device`` overriding it."""
    from dataclasses import replace

    from app.config import load_app_config

    cfg = load_app_config(getattr(args, "app_config", None))
    overrides = {k: v for k, v in (("brain_extraction", getattr(args, "brain_extraction", None)),
                                   ("device", getattr(args, "device", None))) if v is not None}
    return replace(cfg, **overrides)


def cmd_prepare(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.prepare import prepare_studies

    config = load_config(args.config)
    res = prepare_studies(Path(args.studies), Path(args.out), config.grids,
                          labels_csv=Path(args.labels) if args.labels else None,
                          progress=not args.no_progress, overwrite=args.overwrite, app_config=_app_config(args))
    print(f"prepared {res.done} case(s) ({res.labels[1]} uncontrolled, {res.labels[0]} controlled); "
          f"{len(res.failed)} failed; {len(res.clinical_missing)} without a usable clinical record")
    for sid, reason in res.failed.items():
        print(f"  failed {sid}: {reason}")
    for sid, reason in res.clinical_missing.items():
        print(f"  no clinical record {sid}: {reason}")
    return 0 if res.done else 1


def _config(args: argparse.Namespace) -> Any:
    """The training config with ``--folds``/``--epochs`` applied; for later steps, the work folder's copy."""
    from training.config import apply_overrides, load_config, parse_config

    config = load_config(args.config)
    config = apply_overrides(config, getattr(args, "folds", None), getattr(args, "epochs", None))
    saved = Path(args.workdir) / "config.yaml" if getattr(args, "workdir", None) else None
    if saved is not None and saved.is_file() and not (getattr(args, "folds", None) or getattr(args, "epochs", None)):
        import yaml

        overrides = (yaml.safe_load(saved.read_text()) or {}).get("overrides")
        if overrides:  # fuse/export/card after `train --folds/--epochs`: the same overrides apply
            config = apply_overrides(config, overrides.get("folds"),
                                     ",".join(f"{k}={v}" for k, v in (overrides.get("epochs") or {}).items()) or None)
    return config


def cmd_train(args: argparse.Namespace) -> int:
    from training.trainer import interrupted, train

    config = _config(args)
    res = train(config, args.cases, args.workdir, members=args.members, device=args.device or "auto",
                progress=not args.no_progress, stop_after_epochs=args.stop_after_epochs, folds=args.only_folds)
    for m, folds in res.items():
        done = [f for f in folds if "best_val_auc" in f]
        aucs = ", ".join(f"{f['outer_auc']:.3f}" if f.get("outer_auc") is not None else "n/a" for f in done)
        print(f"{m}: {len(done)}/{len(folds)} folds finished; out-of-fold AUC per fold: {aucs}")
    if interrupted(res):
        print("stopped early (--stop-after-epochs); run the same command again to continue")
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.evaluation import fuse_oof

    res = fuse_oof(_config(args), args.workdir)
    for name, m in res["members"].items():
        flag = "" if m["learned"] else f"  NO WEIGHT: {m['not_learned_reason']}"
        print(f"{name}: out-of-fold AUC {m['auc_uncalibrated']:.3f} ({m['auc_uncalibrated_ci'][0]:.3f}-"
              f"{m['auc_uncalibrated_ci'][1]:.3f}){flag}")
    for name, e in res["ensembles"].items():
        o = e["oof_metrics"]
        print(f"{name}: weights {e['weights']} ({e['weight_rule']}); threshold {e['threshold']:.3f} "
              f"({e['threshold_rule_text']}); cross-fitted out-of-fold AUC {o['auc']:.3f} "
              f"({o['auc_ci_low']:.3f}-{o['auc_ci_high']:.3f}), sensitivity {o['sensitivity']:.3f}, "
              f"specificity {o['specificity']:.3f}")
        for w in e["warnings"] + o["warnings"]:
            print(f"  warning: {w}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.export import MemberExport, ModelSetExport, ensembles_mapping, threshold_block, write_model_set
    from training.cases import cases_brain_extraction
    from training.trainer import TrainingError, fold_weight_files

    config = _config(args)
    workdir = Path(args.workdir)
    fusion = json.loads((workdir / "fusion.json").read_text())
    members = [MemberExport(m.name, m.architecture, m.hyperparameters, m.input_key,
                            fold_weight_files(workdir, m.name, config.folds),
                            fusion["members"].get(m.name, {}).get("calibration"))
               for m in config.members.values()]
    size_mb = sum(f.stat().st_size for m in members for f in m.fold_files) / 2**20
    withheld = {n: e.get("withheld", "") for n, e in fusion["ensembles"].items()}
    if withheld.get(config.primary):
        raise TrainingError(f"primary ensemble {config.primary} is {withheld[config.primary]}; "
                            "no model set is exported whose primary result would be meaningless")
    ensembles = ensembles_mapping({n: e["weights"] for n, e in fusion["ensembles"].items()},
                                  {n: threshold_block(e, e["n_cases"]) for n, e in fusion["ensembles"].items()},
                                  withheld=withheld)
    preprocessing = {"grids": config.grids_mapping(), "stages": "operators/ (same code as the app)"}
    if args.cases:
        trained_with = cases_brain_extraction(Path(args.cases))
        if trained_with is not None:
            preprocessing["brain_extraction"] = trained_with
    meta = ModelSetExport(config.name, config.version, config.synthetic, config.intended_use,
                          config.grids_mapping(), ensembles, config.primary, preprocessing=preprocessing,
                          intended_population=config.intended_population)
    evaluation = Path(args.evaluation) if args.evaluation else None
    out = Path(args.out)
    figures = _copy_figures(workdir, evaluation, out)
    card = _card_text(config, workdir, evaluation, size_mb, args.data_description, figures=figures)
    ms = write_model_set(out, meta, members, card)
    if evaluation:  # the card can only compare identities once the set exists
        (out / "MODEL_CARD.md").write_text(_card_text(config, workdir, evaluation, size_mb, args.data_description,
                                                      identity=ms.identity, figures=figures), encoding="utf-8")
    print(f"model set written to {args.out}: {len(ms.members)} members, {size_mb:.1f} MB, identity {ms.identity}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluation import evaluate_model_set, evaluate_studies

    if bool(args.cases) == bool(args.studies):
        print("evaluate: give exactly one of --cases (prepared case files) or --studies (study folders)",
              file=sys.stderr)
        return 2
    if args.studies:
        rep = evaluate_studies(args.model_set, args.studies, args.out, labels_csv=args.labels,
                               app_config=_app_config(args), progress=not args.no_progress, jobs=args.jobs)
        for sid, reason in rep["not_analysed"].items():
            print(f"  not analysed {sid}: {reason}")
    else:
        rep = evaluate_model_set(args.model_set, args.cases, args.out, device=args.device or "auto",
                                 progress=not args.no_progress)
        for cid, reason in rep["not_analysed"].items():
            print(f"  not analysed {cid}: {reason}")
    print(f"{rep['n_cases']} cases; model set {rep['model_set']} {rep['version']}"
          f"{' (SYNTHETIC demo)' if rep['synthetic'] else ''}")
    for kind in ("members", "ensembles"):
        for name, m in rep[kind].items():
            if "withheld" in m:
                print(f"  {name:12s} no prediction: withheld by the model set ({m['withheld']})")
                continue
            print(f"  {name:12s} AUC {m['auc']:.3f} ({m['auc_ci_low']:.3f}-{m['auc_ci_high']:.3f}) "
                  f"ACC {m['accuracy']:.3f} SEN {m['sensitivity']:.3f} SPE {m['specificity']:.3f} "
                  f"Brier {m['brier']:.3f}")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from operators.model_manifest import load_model_set

    config = _config(args)
    ms = load_model_set(args.model_set)
    size_mb = sum(f.path.stat().st_size for m in ms.members.values() for f in m.folds) / 2**20
    evaluation = Path(args.evaluation) if args.evaluation else None
    figures = _copy_figures(Path(args.workdir), evaluation, ms.root)
    same_scoring = None
    if args.evaluated_model_set:
        from operators.model_manifest import load_model_set as _load
        from training.provenance import scoring_differences

        evaluated = _load(args.evaluated_model_set)
        recorded = json.loads(evaluation.read_text()).get("identity") if evaluation else None
        if evaluated.identity != recorded:
            print(f"error: {args.evaluated_model_set} is not the model set the evaluation ran on", file=sys.stderr)
            return 2
        same_scoring = scoring_differences(evaluated.root, ms.root)
    text = _card_text(config, Path(args.workdir), evaluation, size_mb, args.data_description,
                      identity=ms.identity, figures=figures, same_scoring=same_scoring)
    target = ms.model_card or (ms.root / "MODEL_CARD.md")
    target.write_text(text, encoding="utf-8")
    print(f"model card written to {target}")
    return 0


def cmd_all(args: argparse.Namespace) -> int:
    from training.trainer import interrupted, train

    res = train(_config(args), args.cases, args.workdir, members=args.members, device=args.device or "auto",
                progress=not args.no_progress, stop_after_epochs=args.stop_after_epochs, folds=args.only_folds)
    if interrupted(res):
        print("stopped early (--stop-after-epochs); run the same command again to continue "
              "(fuse and export follow when every fold is finished)")
        return 0
    if args.only_folds is not None:
        print(f"trained fold(s) {args.only_folds} only; run `all` without --fold when every fold is finished")
        return 0
    cmd_fuse(args)
    return cmd_export(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, *, config=True, workdir=False, cases=False) -> None:
        if config:
            sp.add_argument("--config", required=True, help="training config YAML or preset name (published, demo)")
        if workdir:
            sp.add_argument("--workdir", required=True, help="work folder (state files, resumable)")
        if cases:
            sp.add_argument("--cases", required=True, help="folder of prepared case files (.npz)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")

    def site_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--app-config", help="the app's configuration file (series rules, clinical lookup "
                        "table, brain extraction, HD-BET weights), as used in deployment")
        sp.add_argument("--brain-extraction", default=None, choices=("auto", "hd-bet", "fallback"),
                        help="override the app configuration's brain_extraction")
        sp.add_argument("--device", default=None, help="override the app configuration's device")

    sp = sub.add_parser("prepare", help="study folders -> case files")
    common(sp)
    sp.add_argument("--studies", required=True, help="folder of study folders (<sid>/input[, <sid>/truth])")
    sp.add_argument("--out", required=True, help="case folder to write")
    sp.add_argument("--labels", help="CSV case_id,label (else each study's truth/truth.json)")
    sp.add_argument("--overwrite", action="store_true", help="redo cases that already exist")
    site_args(sp)
    sp.set_defaults(func=cmd_prepare)

    def override_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--folds", type=int, help="number of cross-validation folds (overrides the config; "
                        "reported in the card)")
        sp.add_argument("--epochs", help="epochs for every recipe (N) or per recipe (wae=12,etsc=20); overrides "
                        "the config, reported in the card")

    def train_args(sp: argparse.ArgumentParser) -> None:
        override_args(sp)
        sp.add_argument("--members", nargs="*", help="only these members")
        sp.add_argument("--fold", type=int, nargs="*", dest="only_folds",
                        help="only these outer folds (run folds in parallel processes on one work folder)")
        sp.add_argument("--device", default=None, help="auto (default), cpu, cuda")
        sp.add_argument("--stop-after-epochs", type=int, default=None,
                        help="stop each fold after this many epochs in this run (resume later)")

    def export_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--out", required=True, help="model set folder to write")
        sp.add_argument("--evaluation", help="evaluation.json to include in the card")
        sp.add_argument("--data-description", default="", help="training data description for the card")

    sp = sub.add_parser("train", help="k-fold cross-validation (resumable)")
    common(sp, workdir=True, cases=True)
    train_args(sp)
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("fuse", help="fusion weights + out-of-fold metrics")
    common(sp, workdir=True)
    sp.set_defaults(func=cmd_fuse)

    sp = sub.add_parser("export", help="write the model set folder")
    common(sp, workdir=True)
    sp.add_argument("--cases", help="the prepared cases: their brain extraction is declared in the manifest, "
                    "and the app's 'auto' then runs the same")
    export_args(sp)
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("evaluate", help="score held-out cases (or study folders, through the app) with a model set")
    common(sp, config=False)
    sp.add_argument("--cases", help="folder of prepared case files (.npz)")
    sp.add_argument("--studies", help="folder of study folders, run through the app's own pipeline")
    sp.add_argument("--labels", help="CSV case_id,label (with --studies; else each study's truth/truth.json)")
    site_args(sp)
    sp.add_argument("--jobs", type=int, default=1, help="with --studies: worker processes (default 1)")
    sp.add_argument("--model-set", required=True)
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("card", help="(re)write MODEL_CARD.md of a model set")
    common(sp, workdir=True)
    sp.add_argument("--model-set", required=True)
    sp.add_argument("--evaluation")
    sp.add_argument("--evaluated-model-set", help="the model set the evaluation ran on, when this one was "
                    "re-exported since (the card compares the two manifests)")
    sp.add_argument("--data-description", default="")
    sp.set_defaults(func=cmd_card)

    sp = sub.add_parser("quantize", help="INT8 OpenVINO IR for a model set, recorded only when validated within "
                                         "1e-3 of PyTorch f32 (needs nncf: pip install '.[quantize]')")
    sp.add_argument("--model-set", required=True, help="model set folder (updated in place)")
    sp.add_argument("--cases", required=True, help="the set's validation case files (.npz)")
    sp.add_argument("--calibration", type=int, default=4, help="cases (first by name) used for calibration")
    sp.add_argument("--validation", type=int, default=None, help="at most this many of the other cases validate")
    sp.add_argument("--tolerance", type=float, default=1e-3, help="largest probability difference accepted")
    sp.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    sp.set_defaults(func=cmd_quantize)

    sp = sub.add_parser("all", help="train + fuse + export")
    common(sp, workdir=True, cases=True)
    train_args(sp)
    export_args(sp)
    sp.set_defaults(func=cmd_all)
    return p


def cmd_quantize(args: argparse.Namespace) -> int:
    from training.quantize import QuantizationError, quantize_from_case_files

    try:
        record = quantize_from_case_files(args.model_set, args.cases, calibration=args.calibration,
                                          validation=args.validation, tolerance=args.tolerance)
    except QuantizationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    v = record["validation"]
    print(f"int8 validated on {v['cases']} cases: max |probability diff| {v['max_abs_probability_diff']:.2e} "
          f"<= {record['tolerance']:g}; recorded in {Path(args.model_set) / 'manifest.yaml'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Quiet by default: the app's per-study INFO lines would bury the progress bars; warnings still show.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted; state is saved after every epoch: run the same command again to continue",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line for expected failures
        from operators.errors import ConfigurationError, PipelineError
        from training.cases import LabelsError
        from training.trainer import TrainingError

        if isinstance(exc, ConfigurationError):  # the settings, not the data: exit 1, as the app and node
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, (PipelineError, TrainingError, FileNotFoundError, LabelsError)):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
