"""Affine registration of a native-space T1 to MNI152, with SimpleITK.

A named slice is an MNI coordinate (`slicing.NAMED_SLICES`); a volume in native space gets one
only after it is registered: `register_to_mni(image)` fits a 12-parameter affine transform
from the volume to nilearn's MNI152 template (2 mm) by Mattes mutual information over a
three-level pyramid, and resamples the volume onto the template's grid (trilinear). The result
carries the template's affine with sform code MNI_152, so the MNI-space check passes for the
right reason. Each transform is cached by the file's fingerprint (name, size, modification
time), so a cohort is registered once.

SimpleITK works in LPS; nibabel in RAS: `_to_sitk` flips the first two axes.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from engine.errors import DatasetError, reason

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
METRIC_BINS = 32  # Mattes mutual information histogram bins
SAMPLING = 0.1  # fraction of voxels the metric samples (seeded)
SEED = 1  # the metric's sampling seed; not 0, which is SimpleITK's sitkWallClock (a new draw every fit)
ITERATIONS = 300  # per pyramid level
SHRINK, SMOOTH = (4, 2, 1), (2.0, 1.0, 0.0)  # pyramid: downsampling factors and Gaussian sigmas (voxels)


@cache
def mni_template() -> nib.Nifti1Image:
    """nilearn's MNI152 T1 template at 2 mm (shipped with nilearn: no download)."""
    from nilearn import datasets  # nilearn is heavy to import: only when a volume is registered

    return nib.as_closest_canonical(datasets.load_mni152_template(resolution=2))


def _to_sitk(image: nib.Nifti1Image) -> sitk.Image:
    image = nib.as_closest_canonical(image)
    data = np.asarray(image.dataobj, np.float32)
    spacing = np.linalg.norm(image.affine[:3, :3], axis=0)
    converted = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    converted.SetSpacing(spacing.tolist())
    converted.SetOrigin((RAS_TO_LPS @ image.affine[:3, 3]).tolist())
    converted.SetDirection((RAS_TO_LPS @ (image.affine[:3, :3] / spacing)).ravel().tolist())
    return converted


def fit_transform(image: nib.Nifti1Image, seed: int = SEED) -> sitk.Transform:
    """The affine transform from MNI152 to `image`'s world (what `sitk.Resample` takes)."""
    fixed, moving = _to_sitk(mni_template()), _to_sitk(image)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(METRIC_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, ITERATIONS, relaxationFactor=0.5)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(SHRINK))
    method.SetSmoothingSigmasPerLevel(list(SMOOTH))
    method.SetInitialTransform(initial, inPlace=False)
    try:
        return method.Execute(fixed, moving)
    except RuntimeError as exc:  # ITK reports a failed fit (e.g. no overlap left) this way
        raise DatasetError(
            f"Registration to MNI152 failed ({reason(exc)}): check that the file is a "
            "T1 head or brain volume, or register it with your own tools and set its sform code to MNI_152 (4)."
        ) from exc


def register_to_mni(image: nib.Nifti1Image, cache: Path | None = None) -> nib.Nifti1Image:
    """`image` resampled onto MNI152's 2 mm grid by an affine fit (sform code MNI_152); the fitted
    transform is read from / written to `cache` (an ITK .tfm file) when given."""
    if cache is not None and cache.is_file():
        transform = sitk.ReadTransform(str(cache))
    else:
        transform = fit_transform(image)
        if cache is not None:
            try:
                cache.parent.mkdir(exist_ok=True)
                sitk.WriteTransform(transform, str(cache))
            except (OSError, RuntimeError):
                pass  # a read-only folder still works, only slower next time
    template = mni_template()
    resampled = sitk.Resample(_to_sitk(image), _to_sitk(template), transform, sitk.sitkLinear, 0.0)
    data = sitk.GetArrayFromImage(resampled).transpose(2, 1, 0).astype(np.float32)
    registered = nib.Nifti1Image(data, template.affine)
    registered.set_sform(template.affine, code="mni")
    registered.set_qform(template.affine, code="mni")
    return registered
