"""Enhanced MR Image Storage (multi-frame) encoding of a synthetic series.

One file per series. Geometry is in the Plane Position / Plane Orientation
functional groups (per frame, orientation shared when all frames agree), the
acquisition physics in the MR functional groups (timing, echo, modifier with
inversion times, FOV, averages, coils) and in the MR Image Frame Type
(``AcquisitionContrast`` T2 / FLUID_ATTENUATED / T1 / DIFFUSION), the stored
value transform in Pixel Value Transformation. Dimensions: stack and
in-stack position (plus b-value for diffusion).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from .dicom_writer import (
    ENHANCED_MR_IMAGE_STORAGE,
    IMPLEMENTATION_VERSION,
    SeriesData,
    StudyContext,
    _common,
    _ds_str,
    bits_stored,
    make_uid,
)

_ACQUISITION_CONTRAST = {"T2": "T2", "FLAIR": "FLUID_ATTENUATED", "T1": "T1", "DIFFUSION": "DIFFUSION",
                         "LOCALIZER": "UNKNOWN"}
_FLAVOUR = {"LOCALIZER": "LOCALIZER", "DIFFUSION": "DIFFUSION"}


def _item(**kwargs: object) -> Dataset:
    ds = Dataset()
    for key, value in kwargs.items():
        setattr(ds, key, value)
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _frame_type(series: SeriesData) -> list[str]:
    """Enhanced MR ImageType: value 2 is always PRIMARY there; a derived image names its pixel contrast."""
    if series.image_type[0] == "DERIVED":
        return ["DERIVED", "PRIMARY", _FLAVOUR.get(series.contrast, "VOLUME"), "RESAMPLED"]
    return ["ORIGINAL", "PRIMARY", _FLAVOUR.get(series.contrast, "VOLUME"), "NONE"]


def _pulse_sequence(ds: Dataset, series: SeriesData) -> None:
    a = series.attributes
    scanning = a.get("ScanningSequence", "SE")
    scanning = [scanning] if isinstance(scanning, str) else list(scanning)
    echo = "GRADIENT" if "GR" in scanning and "SE" not in scanning else "SPIN"
    ds.PulseSequenceName = str(a.get("SequenceName", "unknown")).lstrip("*")[:16] or "unknown"
    ds.MRAcquisitionType = a.get("MRAcquisitionType", "2D")
    ds.EchoPulseSequence = echo
    if echo == "SPIN":
        ds.MultipleSpinEcho = "YES" if int(a.get("EchoTrainLength", 1)) > 1 and "EP" not in scanning else "NO"
    ds.MultiPlanarExcitation = "YES" if ds.MRAcquisitionType == "2D" else "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    if echo == "GRADIENT":
        ds.Spoiling = "RF"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "YES" if "EP" in scanning else "NO"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "FAT" if "FS" in (a.get("ScanOptions") or []) else "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.SegmentedKSpaceTraversal = "PARTIAL" if int(a.get("EchoTrainLength", 1)) > 1 and "EP" not in scanning else "SINGLE"
    if ds.MRAcquisitionType == "3D":
        ds.CoverageOfKSpace = "FULL"
    ds.NumberOfKSpaceTrajectories = 1


def _shared_groups(series: SeriesData, orientation_shared: bool) -> Dataset:
    a = series.attributes
    g = Dataset()
    first = series.frames[0]
    measures = _item(PixelSpacing=[_ds_str(v) for v in series.pixel_spacing],
                     SliceThickness=_ds_str(series.thickness_mm))
    if series.spacing_between_slices_mm is not None:
        measures.SpacingBetweenSlices = _ds_str(series.spacing_between_slices_mm)
    g.PixelMeasuresSequence = Sequence([measures])
    if orientation_shared:
        g.PlaneOrientationSequence = Sequence([_item(ImageOrientationPatient=[_ds_str(v) for v in first.orientation])])
    g.FrameAnatomySequence = Sequence([_item(
        AnatomicRegionSequence=Sequence([_code("12738006", "SCT", "Brain")]), FrameLaterality="U")])
    slope, intercept = series.rescale
    g.PixelValueTransformationSequence = Sequence([_item(
        RescaleIntercept=_ds_str(intercept), RescaleSlope=_ds_str(slope), RescaleType="US")])
    g.FrameVOILUTSequence = Sequence([_item(WindowCenter=_ds_str(series.window[0]),
                                            WindowWidth=_ds_str(series.window[1]))])
    etl = int(a.get("EchoTrainLength", 1))
    is_epi = "EP" in str(a.get("ScanningSequence", ""))
    g.MRTimingAndRelatedParametersSequence = Sequence([_item(
        RepetitionTime=float(a.get("RepetitionTime", 0.0)), FlipAngle=float(a.get("FlipAngle", 90.0)),
        EchoTrainLength=etl, RFEchoTrainLength=1 if is_epi else etl, GradientEchoTrainLength=etl if is_epi else 0)])
    rows, cols = first.pixels.shape
    g.MRFOVGeometrySequence = Sequence([_item(
        InPlanePhaseEncodingDirection="ROW", MRAcquisitionFrequencyEncodingSteps=int(cols),
        MRAcquisitionPhaseEncodingStepsInPlane=int(rows), PercentSampling=100.0, PercentPhaseFieldOfView=100.0)])
    if a.get("MRAcquisitionType") == "3D":
        g.MRFOVGeometrySequence[0].MRAcquisitionPhaseEncodingStepsOutOfPlane = len(series.frames)
    g.MREchoSequence = Sequence([_item(EffectiveEchoTime=float(a.get("EchoTime", 0.0)))])
    modifier = _item(InversionRecovery="YES" if "InversionTime" in a else "NO", FlowCompensation="NONE",
                     T2Preparation="NO", SpatialPresaturation="NONE",
                     SpectrallySelectedExcitation="NONE", PartialFourier="NO", ParallelAcquisition="NO")
    if "GR" in str(a.get("ScanningSequence", "")) and "SE" not in str(a.get("ScanningSequence", "")):
        modifier.Spoiling = "RF"
    if "InversionTime" in a:
        modifier.InversionTimes = [float(a["InversionTime"])]
    g.MRModifierSequence = Sequence([modifier])
    g.MRImagingModifierSequence = Sequence([_item(
        MagnetizationTransfer="NONE", BloodSignalNulling="NO", Tagging="NONE", TransmitterFrequency=123.2,
        PixelBandwidth=_ds_str(float(a.get("PixelBandwidth", 200.0))))])
    g.MRReceiveCoilSequence = Sequence([_item(ReceiveCoilName="Head_32", ReceiveCoilManufacturerName="SIEMENS",
                                              ReceiveCoilType="MULTICOIL", QuadratureReceiveCoil="NO",
                                              MultiCoilDefinitionSequence=Sequence([_item(
                                                  MultiCoilElementName="HE1-4", MultiCoilElementUsed="YES")]))])
    g.MRTransmitCoilSequence = Sequence([_item(TransmitCoilName="Body", TransmitCoilManufacturerName="SIEMENS",
                                               TransmitCoilType="BODY")])
    g.MRAveragesSequence = Sequence([_item(NumberOfAverages=float(a.get("NumberOfAverages", 1.0)))])
    g.MRImageFrameTypeSequence = Sequence([_item(
        FrameType=_frame_type(series), PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
        VolumeBasedCalculationTechnique="NONE", ComplexImageComponent="MAGNITUDE",
        AcquisitionContrast=_ACQUISITION_CONTRAST.get(series.contrast, "UNKNOWN"))])
    return g


def enhanced_dataset(ctx: StudyContext, series: SeriesData) -> Dataset:
    """The Enhanced MR Image Storage dataset of one series (all frames in one instance)."""
    sop_uid = make_uid(ctx.uid_entropy, series.series_uid, "sop", 1)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION

    ds.SOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = ctx.study_date
    ds.InstanceCreationTime = series.series_time
    _common(ds, ctx, series)
    for keyword in ("AcquisitionDate", "AcquisitionTime", "AcquisitionNumber"):
        del ds[keyword]
    ds.AcquisitionNumber = series.acquisition_number
    ds.AcquisitionDateTime = ctx.study_date + series.series_time
    ds.AcquisitionDuration = 180.0
    ds.ImageType = _frame_type(series)
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = _ACQUISITION_CONTRAST.get(series.contrast, "UNKNOWN")
    ds.ContentQualification = "PRODUCT"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = "3"
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    if "ProtocolName" in series.attributes:
        ds.ProtocolName = series.attributes["ProtocolName"]
    _pulse_sequence(ds, series)
    ds.AcquisitionContextSequence = Sequence([])
    ds.InstanceNumber = 1
    ds.ContentDate = ctx.study_date
    ds.ContentTime = series.series_time

    frames = series.frames
    orientations = {tuple(f.orientation) for f in frames}
    orientation_shared = len(orientations) == 1
    # Stacks: one per orientation (the 3-plane localizer has three).
    stack_of: dict[tuple[float, ...], int] = {}
    for f in frames:
        stack_of.setdefault(tuple(f.orientation), len(stack_of) + 1)
    b_values = sorted({float(f.extra["DiffusionBValue"]) for f in frames if "DiffusionBValue" in f.extra})
    dim_uid = make_uid(ctx.uid_entropy, series.series_uid, "dimension-organization")
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=dim_uid)])
    dims = [_item(DimensionOrganizationUID=dim_uid, DimensionIndexPointer=0x00209056,
                  FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="Stack ID"),
            _item(DimensionOrganizationUID=dim_uid, DimensionIndexPointer=0x00209057,
                  FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="In-Stack Position Number")]
    if b_values:
        dims.append(_item(DimensionOrganizationUID=dim_uid, DimensionIndexPointer=0x00189087,
                          FunctionalGroupPointer=0x00189117, DimensionDescriptionLabel="B-value"))
    ds.DimensionIndexSequence = Sequence(dims)
    if len(stack_of) == 1 and not b_values:
        ds.DimensionOrganizationType = "3D"

    ds.SharedFunctionalGroupsSequence = Sequence([_shared_groups(series, orientation_shared)])
    per_frame = []
    position_in_stack: dict[tuple[int, float], int] = {}
    for f in frames:
        stack = stack_of[tuple(f.orientation)]
        b = float(f.extra.get("DiffusionBValue", 0.0))
        pos = position_in_stack.get((stack, b), 0) + 1
        position_in_stack[(stack, b)] = pos
        index = [stack, pos] + ([b_values.index(b) + 1] if b_values else [])
        item = _item(
            FrameContentSequence=Sequence([_item(
                StackID=str(stack), InStackPositionNumber=pos, DimensionIndexValues=index,
                FrameAcquisitionDateTime=ctx.study_date + series.series_time,
                FrameReferenceDateTime=ctx.study_date + series.series_time, FrameAcquisitionDuration=100.0)]),
            PlanePositionSequence=Sequence([_item(ImagePositionPatient=[_ds_str(v) for v in f.position])]),
        )
        if not orientation_shared:
            item.PlaneOrientationSequence = Sequence([_item(
                ImageOrientationPatient=[_ds_str(v) for v in f.orientation])])
        if b_values:
            item.MRDiffusionSequence = Sequence([_item(
                DiffusionBValue=b, DiffusionDirectionality="NONE" if b == 0 else "ISOTROPIC")])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)

    stack = np.stack([f.pixels for f in frames]).astype("<u2", copy=False)
    bits = bits_stored(series)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = int(stack.shape[1]), int(stack.shape[2])
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.add_new(0x7FE00010, "OW", np.ascontiguousarray(stack).tobytes())
    return ds
