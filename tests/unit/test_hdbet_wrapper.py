"""HD-BET wrapper end to end with a tiny randomly initialised checkpoint in HD-BET's on-disk format.

HD-BET 2.x is an nnU-Net v2 model folder (dataset.json, plans.json,
fold_all/checkpoint_final.pth). The test writes such a folder with a coarse
plan (2 mm spacing, 32^3 patches, 3-stage PlainConvUNet with 4-16 features),
so that nnU-Net's real loading, preprocessing, sliding-window prediction and
export code run on CPU in seconds. The weights are random: the tests check the
plumbing (loading once, orientation, geometry, equivalence with nnU-Net's own
file reader), not the segmentation quality.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

torch = pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

from operators.brain_extraction import (  # noqa: E402
    HDBET_ORIENTATION,
    HDBET_RELEASE_DIR,
    HDBET_WEIGHTS_ENV,
    METHOD_FALLBACK,
    METHOD_HDBET,
    BrainExtractor,
    HdBetExtractor,
    HdBetWeightsMissing,
    clear_hdbet_cache,
    resolve_hdbet_folder,
)
from tests.unit import phantoms  # noqa: E402

ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def write_tiny_hdbet(folder: Path, seed: int = 0, reader_writer: str = "SimpleITKIO") -> Path:
    """Write a random nnU-Net v2 'HD-BET' model folder and return it."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    (folder / "fold_all").mkdir(parents=True, exist_ok=True)
    plans = {
        "dataset_name": "Dataset999_TinyBET", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [2.0, 2.0, 2.0],
        "original_median_shape_after_transp": [64, 64, 64],
        "image_reader_writer": reader_writer, "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [32, 32, 32], "median_image_size_in_voxels": [64, 64, 64],
            "spacing": [2.0, 2.0, 2.0], "normalization_schemes": ["ZScoreNormalization"],
            "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": ARCH, "batch_dice": False,
        }},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 1.0, "mean": 0.5, "median": 0.5, "min": 0.0, "percentile_00_5": 0.0,
            "percentile_99_5": 1.0, "std": 0.2}},
    }
    dataset = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "brain": 1},
               "numTraining": 0, "file_ending": ".nii.gz"}
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    torch.manual_seed(seed)
    net = get_network_from_plans(ARCH["network_class_name"], ARCH["arch_kwargs"], ARCH["_kw_requires_import"],
                                 1, 2, allow_init=True, deep_supervision=False)
    checkpoint = {"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                  "init_args": {"configuration": "3d_fullres"}, "inference_allowed_mirroring_axes": (0, 1, 2)}
    torch.save(checkpoint, folder / "fold_all" / "checkpoint_final.pth")
    return folder


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_tiny_hdbet(root / HDBET_RELEASE_DIR)
    yield root
    clear_hdbet_cache()


@pytest.fixture(scope="module")
def flair_lps() -> sitk.Image:
    # a small head keeps nnU-Net's sliding window at a few 32^3 patches on CPU
    shape = phantoms.HeadShape(brain=(26.0, 32.0, 22.0), csf_mm=2.0, skull_mm=2.0, scalp_mm=3.0)
    img, _ = phantoms.render(phantoms.make_grid((22, 26, 8), (3.5, 3.5, 9.0)), 1, shape=shape, noise=10.0)
    return img


def _reoriented(image: sitk.Image, code: str) -> sitk.Image:
    return sitk.DICOMOrient(image, code)


def test_resolve_folder_from_models_dir_env_and_explicit(models_dir: Path, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(HDBET_WEIGHTS_ENV, raising=False)
    release = models_dir / HDBET_RELEASE_DIR
    assert resolve_hdbet_folder(models_dir=models_dir) == release
    assert resolve_hdbet_folder(folder=models_dir / "hd_bet") == release  # zip unpacked one level up
    assert resolve_hdbet_folder(folder=tmp_path, models_dir=tmp_path) is None
    monkeypatch.setenv(HDBET_WEIGHTS_ENV, str(release))
    assert resolve_hdbet_folder(models_dir=tmp_path) == release


def test_missing_weights_message_says_how_to_install(tmp_path) -> None:
    with pytest.raises(HdBetWeightsMissing) as exc:
        HdBetExtractor.from_folder(tmp_path)
    text = str(exc.value)
    assert "fold_all/checkpoint_final.pth" in text and HDBET_WEIGHTS_ENV in text and "licence" in text
    with pytest.raises(HdBetWeightsMissing):
        BrainExtractor("hd-bet", models_dir=tmp_path)
    auto = BrainExtractor("auto", models_dir=tmp_path)
    assert auto.method == METHOD_FALLBACK and "not found" in auto.note


def test_predictor_loaded_once_and_reused(models_dir: Path) -> None:
    folder = models_dir / HDBET_RELEASE_DIR
    a = HdBetExtractor.from_folder(folder, device="cpu")
    b = HdBetExtractor.from_folder(str(folder), device="auto")  # no CUDA here -> same key
    assert a is b
    assert a.device.type == "cpu" and a.use_tta is False
    assert a.reader_writer_name == "SimpleITKIO" and a.num_input_channels == 1


def test_end_to_end_prediction_returns_mask_on_input_grid(models_dir: Path, flair_lps: sitk.Image) -> None:
    extractor = BrainExtractor("auto", models_dir=models_dir, device="cpu")
    assert extractor.method == METHOD_HDBET
    result = extractor.extract(flair_lps, None)
    assert result.method == METHOD_HDBET
    assert result.details["device"] == "cpu" and result.details["input_contrast"] == "flair"
    mask = result.mask
    assert mask.GetSize() == flair_lps.GetSize()
    assert mask.GetSpacing() == pytest.approx(flair_lps.GetSpacing())
    assert mask.GetOrigin() == pytest.approx(flair_lps.GetOrigin())
    assert mask.GetDirection() == pytest.approx(flair_lps.GetDirection())
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(mask))) <= {0, 1}


def test_in_memory_input_equals_nnunet_reading_an_mni_oriented_nifti(models_dir: Path, flair_lps: sitk.Image,
                                                                      tmp_path: Path) -> None:
    """What the wrapper hands nnU-Net equals what nnU-Net's own reader gives for the HD-BET-oriented NIfTI."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    extractor = HdBetExtractor.from_folder(models_dir / HDBET_RELEASE_DIR, device="cpu")
    oriented = _reoriented(sitk.Cast(flair_lps, sitk.sitkFloat32), HDBET_ORIENTATION)
    path = tmp_path / "case_0000.nii.gz"
    sitk.WriteImage(oriented, str(path))
    data, props = SimpleITKIO().read_images([str(path)])
    with contextlib.redirect_stdout(io.StringIO()):
        reference = np.asarray(extractor._predictor.predict_single_npy_array(data, props, None, None, False))
    ours = extractor._predict_simpleitk_layout(oriented)
    np.testing.assert_array_equal(ours, reference)
    assert 0 < ours.sum() < ours.size, "random model should give a non-trivial segmentation"


def test_mask_is_orientation_consistent(models_dir: Path, flair_lps: sitk.Image) -> None:
    """The same physical image stored LPS or RAS yields the same physical mask."""
    extractor = HdBetExtractor.from_folder(models_dir / HDBET_RELEASE_DIR, device="cpu")
    m_lps = extractor.predict_mask(flair_lps, postprocess=False)
    ras = _reoriented(flair_lps, "RAS")
    m_ras = extractor.predict_mask(ras, postprocess=False)
    assert m_ras.GetDirection() == pytest.approx(ras.GetDirection())
    back = sitk.DICOMOrient(m_ras, "LPS")
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(m_lps))
    assert 0 < int(sitk.GetArrayViewFromImage(m_lps).sum()) < int(np.prod(flair_lps.GetSize()))


def test_other_nnunet_reader_goes_through_that_reader(tmp_path: Path, flair_lps: sitk.Image) -> None:
    """A model planned with NibabelIOWithReorient gets its input through that reader; mask geometry holds."""
    pytest.importorskip("nibabel")
    folder = write_tiny_hdbet(tmp_path / "nib" / "release_2.0.0", reader_writer="NibabelIOWithReorient")
    extractor = HdBetExtractor.from_folder(folder, device="cpu")
    assert extractor.reader_writer_name == "NibabelIOWithReorient"
    m_lps = extractor.predict_mask(flair_lps, postprocess=False)
    assert m_lps.GetSize() == flair_lps.GetSize()
    assert m_lps.GetOrigin() == pytest.approx(flair_lps.GetOrigin())
    m_ras = extractor.predict_mask(_reoriented(flair_lps, "RAS"), postprocess=False)
    back = sitk.DICOMOrient(m_ras, "LPS")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(m_lps))
    assert 0 < int(sitk.GetArrayViewFromImage(m_lps).sum()) < int(np.prod(flair_lps.GetSize()))
