"""Command line of the synthetic study generator (``tsc-synth`` / ``python -m synthetic``).

Subcommands:
    generate  write studies for a range of seeds
    auc       best achievable AUC of the label model (no images rendered)
    subject   print the drawn subject parameters of a seed as JSON
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .dicom_writer import ENCODINGS
from .protocols import DECOY_KINDS, DESCRIPTION_MODES
from .study import StudyOptions, _stream, generate_study
from .subject import best_achievable_auc, draw_subject, posterior_uncontrolled

logger = logging.getLogger(__name__)


def _matrix(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    return int(parts[0]), int(parts[1])


def _decoys(text: str) -> bool | str | list[str]:
    if text in ("all", "true", "yes"):
        return True
    if text in ("none", "false", "no"):
        return False
    if text == "random":
        return "random"
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in DECOY_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown decoy kinds {unknown}; choose from {DECOY_KINDS}")
    return kinds


def _procedure_code(text: str | None, description: str) -> tuple[str, str, str] | None:
    if not text:
        return None
    parts = text.split("^")
    if len(parts) > 3 or not parts[0].strip() or any(not p.strip() for p in parts[1:]):
        raise SystemExit(f"error: --procedure-code {text!r} is not VALUE[^SCHEME[^MEANING]]")
    value, scheme, meaning = (parts + ["99LOCAL", description][len(parts) - 1:])[:3]
    return value.strip(), scheme.strip(), meaning.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsc-synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write synthetic studies")
    gen.add_argument("-o", "--out", type=Path, required=True, help="output root (<out>/<sid>/input, truth)")
    gen.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    gen.add_argument("-n", "--count", type=int, default=1, help="number of consecutive seeds (default 1)")
    gen.add_argument("--encoding", choices=ENCODINGS, default="classic")
    gen.add_argument("--descriptions", choices=DESCRIPTION_MODES, default="standard")
    gen.add_argument("--decoys", type=_decoys, default=True,
                     help="all | none | random | comma list of " + ",".join(DECOY_KINDS))
    gen.add_argument("--no-t2", action="store_true", help="leave the T2 series out")
    gen.add_argument("--no-flair", action="store_true", help="leave the FLAIR series out")
    gen.add_argument("--t2-matrix", type=_matrix, default=(384, 384), help="COLSxROWS (default 384x384)")
    gen.add_argument("--flair-matrix", type=_matrix, default=(320, 320), help="COLSxROWS (default 320x320)")
    gen.add_argument("--slices", type=int, default=24)
    gen.add_argument("--patient-name", default=None, help="DICOM PN (default Synthetic^Subject<seed>)")
    gen.add_argument("--study-description", default=StudyOptions.study_description,
                     help=f"Study Description (default {StudyOptions.study_description!r}, which the shipped "
                          "Orthanc routing rule does not route; 'MR BRAIN TSC PROTOCOL' is routed)")
    gen.add_argument("--procedure-code", default=None, metavar="VALUE[^SCHEME[^MEANING]]",
                     help="Procedure Code Sequence item, e.g. TSC-MR-BRAIN (listed in the shipped rule's "
                          "ProcedureCodes); scheme default 99LOCAL, meaning default the study description")
    gen.add_argument("--max-rotation-deg", type=float, default=5.0)
    gen.add_argument("--max-translation-mm", type=float, default=10.0)

    auc = sub.add_parser("auc", help="best achievable AUC of the label model on drawn subjects")
    auc.add_argument("-n", "--subjects", type=int, default=500)
    auc.add_argument("--seed", type=int, default=0)
    auc.add_argument("--json", type=Path, default=None, help="also write the result here")

    subj = sub.add_parser("subject", help="print the subject parameters drawn for a seed")
    subj.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "generate":
        if args.count < 1 or args.seed < 0:
            print("error: --count must be >= 1 and --seed >= 0", file=sys.stderr)
            return 2
        pixel = {"t2": 0.6 * 384 / args.t2_matrix[0], "flair": 0.7 * 320 / args.flair_matrix[0]}
        options = StudyOptions(
            encoding=args.encoding, descriptions=args.descriptions, decoys=args.decoys,
            include_t2=not args.no_t2, include_flair=not args.no_flair,
            t2_matrix=args.t2_matrix, t2_pixel_mm=round(pixel["t2"], 4),
            flair_matrix=args.flair_matrix, flair_pixel_mm=round(pixel["flair"], 4),
            slices=args.slices, patient_name=args.patient_name,
            study_description=args.study_description,
            procedure_code=_procedure_code(args.procedure_code, args.study_description),
            max_rotation_deg=args.max_rotation_deg, max_translation_mm=args.max_translation_mm)
        for seed in range(args.seed, args.seed + args.count):
            start = time.perf_counter()
            study = generate_study(args.out, seed, options)
            print(f"{study.sid}\tlabel={study.label}\tp={study.posterior['all']:.3f}\t"
                  f"{time.perf_counter() - start:.1f}s\t{study.input_dir}")
        return 0
    if args.command == "auc":
        result = best_achievable_auc(args.subjects, args.seed)
        text = json.dumps(result, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n", encoding="utf-8")
        return 0
    if args.command == "subject":
        s = draw_subject(_stream(args.seed, "subject"))
        out = s.to_dict() | {"posterior_uncontrolled": posterior_uncontrolled(s), "burden": s.burden()}
        print(json.dumps(out, indent=2))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
