"""Affine registration to MNI152 by SimpleITK (Eve's own), dipy and antspyx: accuracy and cost per volume.

Registers real T1 volumes to nilearn's MNI152 template at 2 mm (`registration.mni_template`) with
each library that imports, and resamples them onto the template's grid (trilinear):

* SimpleITK: Eve's own path, `registration.fit_transform` + `register_to_mni` (Mattes MI, 32 bins,
  10% sampling with seed 0, shrink 4/2/1, 300 iterations a level, moments initialisation);
* dipy: `dipy.align.imaffine.AffineRegistration` (MutualInformationMetric, 32 bins, every voxel;
  factors 4/2/1, sigmas 3/1/0, L-BFGS-B up to 10000/1000/100 iterations, dipy's tutorial settings),
  started at the centres of mass and fitted translation -> rigid -> affine, each from the last;
* antspyx: `ants.registration(type_of_transform="Affine")` (its defaults: Mattes MI, 32 bins, 20%
  sampling, shrink 6/4/2/1, centre-of-mass initialisation; random seed 0), `ants.apply_transforms`.

The volumes:

* Debian's native head T1 (insighttoolkit5-examples, KmeansTest_T1UCharRaw.nii.gz): 128 x 128 x 62,
  LSA, 2 x 2 x 3 mm, skull included, scanner sform;
* nibabel's test image anatomical.nii: 33 x 41 x 25, LAS, 2 mm (a 66 x 82 x 50 mm crop);
* Colin27 (mricron-data, ch2.nii.gz: 181 x 217 x 181, 1 mm, head, in MNI space) as stored, whose
  true transform is the identity, and moved by a known affine written into its header (rotated 10
  degrees about the left-right axis, shifted 8 mm to the right, scaled by 1.05; sform/qform code
  scanner), whose true transform is that affine. For these two the recovered transform is compared
  with the truth point by point over Colin27's brain (ch2bet.nii.gz's voxels): the mean and largest
  displacement error in mm. Colin27 is not MNI152 (another brain, another template build), so the
  perturbed row also reports the error against the library's own fits of the stored Colin27
  composed with the known affine ("vs own fit", averaged): what the perturbation changed in the answer.

Accuracy, per volume: Pearson correlation with the template over MNI152's brain mask (nilearn's
`load_mni152_brain_mask(resolution=2)`), and of the two named slices Eve's models read, coronal
y = -22 mm ("hippocampus") and sagittal x = 0 mm ("midline"), as `slicing.model_input` cuts them
(64 x 64, p99), the way tests/test_real_t1.py compares them (an empty slice, the volume moved off it,
counts r = 0). Cost: wall seconds per volume for fit + resample (inputs already in memory; the
template is loaded beforehand), and the CPU seconds the process used meanwhile. Every library gets
the same THREADS threads (OpenMP, BLAS, ITK, torch).
A reference row gives the metrics of Colin27 resampled by its own header (the truth, no fit).

Each fit is repeated (--repeats, 10): Eve's SimpleITK fit passed seed 0 when this ran, which
SimpleITK reads as sitkWallClock (a new sampling seed each fit; since fixed: `registration.SEED` =
1), and ANTs' multi-threaded fit differs from run to run even with a fixed --random-seed. dipy
samples every voxel and is deterministic, so its repeats (--dipy-repeats, 2) only re-time it. The
table gives the median cost and the mean (min-max) of each accuracy metric, and for Colin27 how many
fits land more than 5 mm (mean over its brain) off the truth.

Run: .venv/bin/python benchmarks/compare_registration.py [--libraries simpleitk dipy ants] [--repeats 10]
(dipy is this benchmark's requirement, not Eve's: .venv/bin/pip install dipy==1.12.1; antspyx 0.6.3
pins numpy<2.4 and scipy<1.16; installed with --no-deps into a folder of its own it
runs with the venv's numpy 2.4: PYTHONPATH=/tmp/ants-site .venv/bin/python benchmarks/...)
Writes benchmarks/results/registration.json.
"""

from __future__ import annotations

import os

THREADS = 2  # every library the same (the machine this was first run on has 2 cores)
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
    os.environ[_variable] = str(THREADS)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402
from nibabel.testing import data_path  # noqa: E402
from scipy.ndimage import map_coordinates  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from engine import machine  # noqa: E402
from engine.data.registration import fit_transform, mni_template, register_to_mni  # noqa: E402
from engine.data.slicing import SliceSpec, model_input  # noqa: E402

NATIVE = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz")
ANATOMICAL = Path(data_path) / "anatomical.nii"
COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
COLIN_BRAIN = COLIN.with_name("ch2bet.nii.gz")
RESULTS = Path(__file__).resolve().parent / "results" / "registration.json"
SLICES = (("coronal", "hippocampus"), ("sagittal", "midline"))
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (ITK and ANTs work in LPS)


def perturbation() -> np.ndarray:
    """The known affine moved into Colin27's header: scale 1.05, rotate 10 deg about x, shift 8 mm in x."""
    angle = np.deg2rad(10.0)
    rotate = np.eye(4)
    rotate[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    shift = np.eye(4)
    shift[0, 3] = 8.0
    return shift @ rotate @ np.diag([1.05, 1.05, 1.05, 1.0])


def canonical(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """As Eve's `Dataset.load_image` hands it on: RAS+, float32."""
    image = nib.as_closest_canonical(image)
    return nib.Nifti1Image(np.asarray(image.dataobj, np.float32), image.affine)


def volumes() -> dict[str, tuple[nib.Nifti1Image, np.ndarray | None]]:
    """name -> (image, true transform from MNI world to the image's world, RAS; None when unknown)."""
    colin = nib.load(COLIN)
    moved = nib.Nifti1Image(np.asarray(colin.dataobj), perturbation() @ colin.affine)
    moved.set_sform(moved.affine, code="scanner")
    moved.set_qform(moved.affine, code="scanner")
    return {
        "native head T1 (ITK KmeansTest)": (canonical(nib.load(NATIVE)), None),
        "nibabel anatomical.nii": (canonical(nib.load(ANATOMICAL)), None),
        "Colin27 as stored (MNI)": (canonical(colin), np.eye(4)),
        "Colin27 moved (10 deg, 8 mm, x1.05)": (canonical(moved), perturbation()),
    }


def matrix_of(lps_map) -> np.ndarray:
    """The 4 x 4 RAS matrix of an affine map given as a function of LPS points (ITK, ANTs)."""
    points = np.array([[0.0, 0, 0], [100, 0, 0], [0, 100, 0], [0, 0, 100]])
    flip = FLIP[:3, :3].diagonal()
    mapped = np.array([np.asarray(lps_map(tuple(p * flip)), float) * flip for p in points])
    return np.vstack([np.linalg.solve(np.c_[points, np.ones(4)], mapped).T, [0, 0, 0, 1]])


# Each register_* takes a RAS float32 image and returns (data on the template's grid, the fitted
# 4 x 4 RAS matrix from template world to the image's world). Only this call is timed.


def register_simpleitk(image: nib.Nifti1Image, folder: Path):
    transform = fit_transform(image)
    cache = folder / "simpleitk.tfm"
    sitk.WriteTransform(transform, str(cache))  # register_to_mni reads it back instead of fitting again
    registered = register_to_mni(image, cache)
    cache.unlink()
    return np.asarray(registered.dataobj, np.float32), matrix_of(transform.TransformPoint)


def register_dipy(image: nib.Nifti1Image, folder: Path):
    from dipy.align.imaffine import AffineRegistration, MutualInformationMetric, transform_centers_of_mass
    from dipy.align.transforms import AffineTransform3D, RigidTransform3D, TranslationTransform3D

    template = mni_template()
    static, moving = np.asarray(template.dataobj, np.float32), np.asarray(image.dataobj, np.float32)
    grids = {"static_grid2world": template.affine, "moving_grid2world": image.affine}
    fitted = transform_centers_of_mass(static, template.affine, moving, image.affine)
    method = AffineRegistration(
        metric=MutualInformationMetric(nbins=32, sampling_proportion=None),
        level_iters=[10000, 1000, 100],
        sigmas=[3.0, 1.0, 0.0],
        factors=[4, 2, 1],
        verbosity=0,
    )
    for transform in (TranslationTransform3D(), RigidTransform3D(), AffineTransform3D()):
        fitted = method.optimize(static, moving, transform, None, starting_affine=fitted.affine, **grids)
    return fitted.transform(moving).astype(np.float32), fitted.affine


def register_ants(image: nib.Nifti1Image, folder: Path):
    import ants

    fixed, moving = (ants.image_read(str(folder / name)) for name in ("template.nii", "moving.nii"))
    start = time.perf_counter()
    fit = ants.registration(fixed, moving, type_of_transform="Affine", outprefix=str(folder / "ants-"))
    warped = ants.apply_transforms(fixed, moving, fit["fwdtransforms"], interpolator="linear")
    seconds = time.perf_counter() - start
    transform = ants.read_transform(fit["fwdtransforms"][0])
    return warped.numpy().astype(np.float32), matrix_of(transform.apply_to_point), seconds


def _prepare_ants(image: nib.Nifti1Image, folder: Path) -> None:
    """ANTs reads files: written before the clock starts (reading them is not timed either)."""
    nib.save(mni_template(), folder / "template.nii")
    nib.save(image, folder / "moving.nii")


def library_versions(names: list[str]) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            if name == "simpleitk":
                found[name] = f"SimpleITK {sitk.Version.VersionString()}"
            elif name == "dipy":
                import dipy

                found[name] = f"dipy {dipy.__version__}"
            elif name == "ants":
                import ants
                from ants.config import set_ants_deterministic

                set_ants_deterministic(True, seed_value=0)  # --random-seed 0 for its sampling; it also
                os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(THREADS)  # sets 1 thread: undone
                found[name] = f"antspyx {ants.__version__}"
        except ImportError as exc:
            print(f"{name}: not importable ({exc}); skipped")
    return found


def resample(image: nib.Nifti1Image, matrix: np.ndarray) -> np.ndarray:
    """`image` on the template's grid through `matrix` (template world -> image world), trilinear."""
    template = mni_template()
    ijk = np.indices(template.shape).reshape(3, -1)
    world = matrix @ template.affine @ np.vstack([ijk, np.ones(ijk.shape[1])])
    voxels = np.linalg.solve(image.affine, world)[:3]
    data = np.asarray(image.dataobj, np.float32)
    return map_coordinates(data, voxels, order=1, cval=0.0).reshape(template.shape)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r; 0 where `a` is constant (a fit that moved the volume off the slice: nothing matches)."""
    a, b = np.ravel(a), np.ravel(b)
    return 0.0 if a.std() == 0 else float(np.corrcoef(a, b)[0, 1])


def similarity(data: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Correlation with MNI152 over its brain mask, and of the named slices (tests/test_real_t1.py's way)."""
    template = mni_template()
    reference = np.asarray(template.dataobj, np.float32)
    scores = {"r brain mask": correlation(data[mask], reference[mask])}
    for plane, name in SLICES:
        spec = SliceSpec(plane, name, 64, "p99")
        ours = model_input(data, template.affine, spec)[0, 0].numpy()
        theirs = model_input(reference, template.affine, spec)[0, 0].numpy()
        scores[f"r {plane} {name}"] = correlation(ours, theirs)
    return scores


def displacement(fitted: np.ndarray, truth: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """Mean and largest distance (mm) between where `fitted` and `truth` send `points` (4 x N, MNI)."""
    distance = np.linalg.norm((fitted @ points - truth @ points)[:3], axis=0)
    return float(distance.mean()), float(distance.max())


def run_once(library: str, image: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(data on the template's grid, fitted matrix, wall s, CPU s) of one registration."""
    register = {"simpleitk": register_simpleitk, "dipy": register_dipy, "ants": register_ants}[library]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if library == "ants":
            _prepare_ants(image, folder)
        cpu, start = time.process_time(), time.perf_counter()
        data, matrix, *timed = register(image, folder)
        return data, matrix, timed[0] if timed else time.perf_counter() - start, time.process_time() - cpu


def summarise(runs: list[dict]) -> dict:
    """Median cost; mean, min and max of each accuracy metric over the repeats."""
    summary = {
        "wall s": float(np.median([r["wall s"] for r in runs])),
        "cpu s": float(np.median([r["cpu s"] for r in runs])),
    }
    for key in runs[0]:
        if key.startswith(("r ", "mean error", "max error", "check")):
            values = [r[key] for r in runs]
            summary[key] = float(np.mean(values))
            summary[f"{key} range"] = [float(min(values)), float(max(values))]
    if "mean error mm" in runs[0]:
        summary["fits > 5 mm off"] = f"{sum(r['mean error mm'] > 5 for r in runs)} of {len(runs)}"
    return summary


COLUMNS = (
    "wall s",
    "cpu s",
    "r brain mask",
    "r coronal hippocampus",
    "r sagittal midline",
    "mean error mm",
    "max error mm",
    "mean error mm vs own fit",
    "fits > 5 mm off",
)


def cell(row: dict, column: str) -> str:
    if column not in row:
        return "-"
    if isinstance(row[column], str):
        return row[column]
    if f"{column} range" in row and row[f"{column} range"][1] - row[f"{column} range"][0] >= 0.0005:
        low, high = row[f"{column} range"]
        return f"{row[column]:.3f} ({low:.3f}-{high:.3f})"
    return f"{row[column]:.3f}" if column.startswith(("r ", "check")) else f"{row[column]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--libraries", nargs="+", default=["simpleitk", "dipy", "ants"], choices=["simpleitk", "dipy", "ants"]
    )
    parser.add_argument("--repeats", type=int, default=10, help="registrations per volume and library")
    parser.add_argument(
        "--dipy-repeats", type=int, default=2, help="dipy's (it samples every voxel: deterministic, only re-timed)"
    )
    parser.add_argument("--volumes", default="", help="only the volumes whose name contains this text")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # the machine may be shared: wall times are only as clean as this
    torch.set_num_threads(THREADS)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(THREADS)
    versions = library_versions(args.libraries)
    from nilearn.datasets import load_mni152_brain_mask

    template = mni_template()
    mask_image = nib.as_closest_canonical(load_mni152_brain_mask(resolution=2))
    assert mask_image.shape == template.shape and np.allclose(mask_image.affine, template.affine)
    mask = np.asarray(mask_image.dataobj) > 0
    brain = nib.load(COLIN_BRAIN)  # Colin27's brain voxels, as MNI points, for the displacement errors
    ijk = np.argwhere(np.asarray(brain.dataobj) > 0).T
    points = brain.affine @ np.vstack([ijk, np.ones(ijk.shape[1])])
    colin = canonical(nib.load(COLIN))
    rows = [
        {
            "volume": "Colin27 as stored (MNI)",
            "library": "reference: its header (no fit)",
            **similarity(resample(colin, np.eye(4)), mask),
        }
    ]
    own_fit: dict[str, list[np.ndarray]] = {}
    for volume, (image, truth) in volumes().items():
        if args.volumes not in volume:
            continue
        for library, version in versions.items():
            row, runs = {"volume": volume, "library": version}, []
            for repeat in range(args.dipy_repeats if library == "dipy" else args.repeats):
                try:
                    data, matrix, wall, cpu = run_once(library, image)
                except Exception as exc:  # a failed fit is a result too
                    row["error"] = " ".join(str(exc).split())[:300]
                    print(f"{volume} / {version}: failed: {row['error']}", flush=True)
                    break
                run = {"wall s": wall, "cpu s": cpu, **similarity(data, mask)}
                # the matrix read off the fit resamples the volume as the library did (else its errors mean nothing)
                run["check r (matrix vs library resample)"] = correlation(resample(image, matrix)[mask], data[mask])
                if truth is not None:
                    run["mean error mm"], run["max error mm"] = displacement(matrix, truth, points)
                    if volume.startswith("Colin27 as stored"):
                        own_fit.setdefault(library, []).append(matrix)
                    elif library in own_fit:  # against each of its fits of the stored Colin27, averaged
                        errors = np.array([displacement(matrix, truth @ own, points) for own in own_fit[library]])
                        run["mean error mm vs own fit"], run["max error mm vs own fit"] = errors.mean(0).tolist()
                run["matrix"] = np.round(matrix, 5).tolist()
                runs.append(run)
                print(
                    f"{volume} / {version} #{repeat + 1}: {wall:.1f} s, r mask {run['r brain mask']:.3f}, "
                    f"slices {run['r coronal hippocampus']:.3f} / {run['r sagittal midline']:.3f}"
                    + (f", error {run['mean error mm']:.2f} mm" if truth is not None else ""),
                    flush=True,
                )
            if runs:
                row.update(summarise(runs))
            row["runs"] = runs
            rows.append(row)

    print(
        f"\nAffine registration to MNI152 (2 mm), {THREADS} threads each, {args.repeats} repeats "
        f"({args.dipy_repeats} for dipy) "
        f"(median cost; mean (min-max) accuracy); {machine()}"
    )
    print(" | ".join(("volume", "library") + COLUMNS))
    for row in rows:
        cells = [cell(row, c) for c in COLUMNS] if "error" not in row else [f"failed: {row['error']}"]
        print(" | ".join([row["volume"], row["library"], *cells]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "what": __doc__.splitlines()[0],
        "command": "python benchmarks/compare_registration.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "threads": THREADS,
        "load average before / after (1 min)": [load_before, os.getloadavg()[0]],
        "repeats": args.repeats,
        "dipy repeats": args.dipy_repeats,
        "versions": versions,
        "perturbation (RAS, MNI world -> moved world)": np.round(perturbation(), 6).tolist(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
