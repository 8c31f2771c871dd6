"""INT8 OpenVINO IR for a model set, validated against eager PyTorch f32 (issue 14).

``quantize_model_set`` quantises every fold network of a model set with NNCF
post-training quantisation (calibration on a few of the set's cases), runs the
set's validation cases through eager PyTorch f32 and through the INT8 IR (the
runner's own OpenVINO code path), and records the mode in the manifest's
``openvino_reduced_precision.int8`` block and in the model card only when every
fold probability stays within the tolerance (at most 1e-3). Only the image
networks are quantised: they carry all the compute, while the clinical FCNN's
INT8 form moved probabilities by 2e-2 on a test set (it runs f32 in int8 mode). A set that fails
keeps running in f32; nothing is recorded and the INT8 files are removed.

    python -m training quantize --model-set models --cases CASES [--calibration 4] [--validation 8]

NNCF is needed only here (``pip install nncf``), not by the app at run time.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from operators.inference import (EnsembleRunner, MemberInputs, RunnerOptions, _OpenVinoMember, cpu_quota,
                                 member_input_array)
from operators.model_manifest import (MAX_REDUCED_TOLERANCE, REDUCED_PRECISION_KEY, IrFiles, ReducedPrecisionMode,
                                      load_model_set, sha256_file, write_manifest)
from operators.openvino_engine import IrCache, import_openvino, openvino_version

logger = logging.getLogger(__name__)

IR_FOLDER = "openvino"
_CARD_START = "<!-- openvino-reduced-precision:start -->"
_CARD_END = "<!-- openvino-reduced-precision:end -->"


class QuantizationError(RuntimeError):
    """INT8 quantisation could not be done or did not validate."""


def quantize_model_set(model_set_dir: str | Path, calibration: Sequence[MemberInputs],
                       validation: Sequence[MemberInputs], *, tolerance: float = MAX_REDUCED_TOLERANCE,
                       cache_dir: Path | None = None, source: str = "") -> dict[str, Any]:
    """Quantise, validate and record the ``int8`` mode of a model set.

    Args:
        model_set_dir: The model set folder (written in place: ``openvino/`` + manifest + card).
        calibration: Cases for NNCF's activation statistics (disjoint from ``validation``).
        validation: The set's validation cases; every member's fold probabilities are compared.
        tolerance: Largest probability difference accepted (<= 1e-3).
        cache_dir: OpenVINO IR cache (the f32 IR that is quantised).
        source: Where the cases come from, recorded with the validation.

    Returns:
        The manifest block that was recorded.

    Raises:
        QuantizationError: NNCF missing, no cases, or validation failed (nothing recorded).
    """
    try:
        ov = import_openvino()  # before nncf, so that neither loads OpenVINO's telemetry
        import nncf
    except ImportError as exc:
        raise QuantizationError(f"INT8 quantisation needs nncf and openvino ({exc}); pip install nncf") from exc
    if not calibration or not validation:
        raise QuantizationError("need at least one calibration and one validation case")
    if not 0 < tolerance <= MAX_REDUCED_TOLERANCE:
        raise QuantizationError(f"tolerance must be in (0, {MAX_REDUCED_TOLERANCE:g}]")
    folder = Path(model_set_dir)
    ms = load_model_set(folder)
    out = folder / IR_FOLDER
    out.mkdir(exist_ok=True)
    cache = IrCache(cache_dir)
    threads = cpu_quota()

    t0 = time.perf_counter()
    entries: dict[str, list[dict[str, str]]] = {}
    irs: dict[str, tuple[IrFiles, ...]] = {}
    image_members = {n: m for n, m in ms.members.items() if not m.is_clinical}
    for name, spec in image_members.items():
        arrays = [a for a, _ in (member_input_array(spec, c) for c in calibration) if a is not None]
        if not arrays:
            raise QuantizationError(f"member {name}: no calibration case has its input {spec.input_key}")
        f32 = _OpenVinoMember(spec, "fp32", None, cache, stream=True, threads=threads).sources
        entries[name], files = [], []
        for k, source_ir in enumerate(f32):
            model = ov.Core().read_model(str(source_ir.xml)) if isinstance(source_ir, IrFiles) else source_ir
            quantised = nncf.quantize(model, nncf.Dataset(arrays), subset_size=len(arrays),
                                      preset=nncf.QuantizationPreset.PERFORMANCE)
            stem = f"{name}.fold{k}.int8"
            ov.save_model(quantised, out / f"{stem}.xml", compress_to_fp16=False)
            entry = {"xml": f"{IR_FOLDER}/{stem}.xml", "xml_sha256": sha256_file(out / f"{stem}.xml"),
                     "bin": f"{IR_FOLDER}/{stem}.bin", "bin_sha256": sha256_file(out / f"{stem}.bin")}
            entries[name].append(entry)
            files.append(IrFiles(folder / entry["xml"], folder / entry["bin"], entry["xml_sha256"],
                                 entry["bin_sha256"], origin=f"{out}"))
            logger.info("member %s fold %d quantised to INT8", name, k)
        irs[name] = tuple(files)
    quantise_s = time.perf_counter() - t0

    reference = EnsembleRunner(ms, RunnerOptions(device="cpu", engine="pytorch", weights_residency="stream"))
    expected = [reference.member_fold_scores(v)[0] for v in validation]
    del reference
    candidate = ReducedPrecisionMode("int8", tolerance, {"cases": len(validation)}, irs)
    worst = (0.0, "")
    for name, spec in image_members.items():
        member = _OpenVinoMember(spec, "int8", candidate, None, stream=True, threads=threads)
        for case_index, case in enumerate(validation):
            array, _ = member_input_array(spec, case)
            if array is None:
                continue
            for k, (p, q) in enumerate(zip(expected[case_index][name], member.fold_probabilities(array))):
                if abs(p - q) > worst[0]:
                    worst = (abs(p - q), f"member {name} fold {k} case {case_index}")
    record = {"tolerance": float(tolerance),
              "validation": {"cases": len(validation), "calibration_cases": len(calibration),
                             "max_abs_probability_diff": float(worst[0]), "worst": worst[1],
                             "reference": "eager PyTorch f32", "source": source, "openvino": openvino_version(),
                             "nncf": str(nncf.__version__), "preset": "performance (symmetric)",
                             "quantise_s": round(quantise_s, 1)},
              "members": entries}
    if worst[0] > tolerance:
        for files in irs.values():
            for ir in files:
                ir.xml.unlink(missing_ok=True)
                ir.bin.unlink(missing_ok=True)
        raise QuantizationError(f"INT8 not validated for {ms.name}: max |probability diff| {worst[0]:.2e} "
                                f"({worst[1]}) > {tolerance:g}; the set stays f32")

    data = yaml.safe_load(ms.manifest_path.read_text(encoding="utf-8"))
    data.setdefault(REDUCED_PRECISION_KEY, {})["int8"] = record
    write_manifest(data, folder)
    validated = load_model_set(folder)  # parses and checksums the new block
    if validated.model_card is not None:
        write_card_section(validated.model_card, validated.reduced_precision["int8"])
    logger.info("INT8 validated for %s: %s", ms.name, validated.reduced_precision["int8"].describe())
    return record


def quantize_from_case_files(model_set_dir: str | Path, cases_dir: str | Path, *, calibration: int = 4,
                             validation: int | None = None, tolerance: float = MAX_REDUCED_TOLERANCE
                             ) -> dict[str, Any]:
    """``quantize_model_set`` on prepared case files: the first ``calibration`` cases (by name)
    calibrate, the following ones (at most ``validation``) validate."""
    from training.cases import list_cases, load_case

    paths = list_cases(cases_dir)
    if len(paths) <= calibration:
        raise QuantizationError(f"{cases_dir}: {len(paths)} case files, need more than {calibration} "
                                "(calibration + validation)")
    chosen = paths[calibration:] if validation is None else paths[calibration:calibration + validation]

    def inputs(path: Path) -> MemberInputs:
        case = load_case(path)
        return MemberInputs(images=case.images, clinical=case.clinical_vector())

    return quantize_model_set(model_set_dir, [inputs(p) for p in paths[:calibration]], [inputs(p) for p in chosen],
                              tolerance=tolerance, source=f"{len(chosen)} case files of {Path(cases_dir).name}")


def write_card_section(card: Path, mode: ReducedPrecisionMode) -> None:
    """Replace (or append) the model card's reduced-precision section."""
    v = mode.validation
    section = "\n".join([
        _CARD_START,
        "## Reduced precision (OpenVINO)",
        "",
        f"- Mode `{mode.mode}` is validated for this model set: on {v.get('cases')} validation cases "
        f"({v.get('source') or 'the set validation cases'}) every fold probability stayed within "
        f"{float(v['max_abs_probability_diff']):.1e} of eager PyTorch f32 (tolerance {mode.tolerance:g}).",
        f"- Made with OpenVINO {v.get('openvino')} and NNCF {v.get('nncf')} post-training quantisation "
        f"({v.get('preset')}, {v.get('calibration_cases')} calibration cases).",
        "- The app runs f32 unless `inference_precision: reduced` (or `int8`) is configured; every "
        "report names the mode used.",
        _CARD_END,
    ])
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    pattern = re.compile(re.escape(_CARD_START) + ".*?" + re.escape(_CARD_END), re.S)
    text = pattern.sub(section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    card.write_text(text, encoding="utf-8")
