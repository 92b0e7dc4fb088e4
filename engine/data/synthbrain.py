"""SynthBrain: a cohort of 3D T1 brain MRIs with known ground truth.

Built from the MNI152 (ICBM 2009a, 2 mm) T1 template and its grey/white-matter maps, which
nilearn ships inside its package (no download). Per subject:

1. latent factors: age ~ U(55, 90), sex ∈ {F, M};
2. deformation parameters driven by the latents (log-normal noise around a trend):
   head scale (men larger), lateral-ventricle enlargement (grows with age),
   hippocampal atrophy (grows with age), global grey-matter atrophy (grows with age);
3. one smooth backward warp applied to the template and to every tissue/structure map:
   global scaling about the brain centre, then the ventricles' surface pushed outward along
   its normal (enlargement) and a Gaussian-windowed contraction around each hippocampus;
   both calibrated so the measured volume factor is the requested one;
4. grey-matter atrophy turns a fraction of grey matter into CSF (intensity and volume);
5. nuisances: a smooth multiplicative bias field, a contrast (gamma) change, Rician noise.

`features.csv` records the latents, the volumes *measured* on each subject's warped maps
(mL), the nuisances, and a diagnosis-like label drawn from a logistic function of the
standardised ventricle and hippocampal volumes (`label`), plus a variant that also leaks
head size (`label_shortcut`). `truth.json` states every function and parameter.
"""

from __future__ import annotations

import functools
import io
import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.ndimage import distance_transform_edt, gaussian_filter, map_coordinates

VOXEL_ML = 8.0 / 1000.0  # a 2 mm isotropic voxel in mL
BRAIN_CENTRE_MM = np.array([0.0, -18.0, 8.0])
VENTRICLE_REACH_MM = 15.0  # how far outside the ventricles their enlargement pushes tissue
HIPPOCAMPUS_CENTRES_MM = (np.array([-27.0, -22.0, -14.0]), np.array([27.0, -22.0, -14.0]))
HIPPOCAMPUS_SEMI_AXES_MM = np.array([5.0, 17.0, 6.0])  # ellipsoid used to define the structure
HIPPOCAMPUS_SIGMA_MM = np.array([7.0, 16.0, 8.0])
TISSUE_T1 = {"csf": 0.25, "gm": 0.62, "wm": 0.87}  # template intensities of each class


@dataclass(frozen=True)
class Trends:
    """How latents drive each factor: log-volume factor = slope·(age − 72) + sex term + N(0, sd²)."""

    age_low: float = 55.0
    age_high: float = 90.0
    age_ref: float = 72.0
    head_scale_male: float = 0.045  # linear head scale: 1 + male·0.045 + N(0, head_scale_sd²)
    head_scale_sd: float = 0.035
    ventricle_log_slope: float = 0.030  # per year; ≈ ×1.7 from 72 to 90
    ventricle_log_sd: float = 0.25
    hippocampus_log_slope: float = -0.015  # per year
    hippocampus_log_sd: float = 0.12
    gm_atrophy_slope: float = 0.004  # fraction of GM lost per year over 72
    gm_atrophy_sd: float = 0.03
    bias_field_max: float = 0.15  # amplitude of the multiplicative bias field ~ U(0, max)
    contrast_low: float = 0.85  # gamma ~ U(low, high)
    contrast_high: float = 1.15
    noise_sd_low: float = 0.01  # Rician noise sd ~ U(low, high)
    noise_sd_high: float = 0.035


@dataclass(frozen=True)
class LabelModel:
    """logit = intercept + ventricle·z(V) + hippocampus·z(H) [+ head_size·z(ICV) for the shortcut]."""

    intercept: float = 0.0
    ventricle: float = 1.6
    hippocampus: float = -1.6
    head_size_shortcut: float = 1.6  # only in label_shortcut


class Template:
    """MNI152 2 mm T1 template, tissue maps and Eve's structure masks, in RAS+ voxel order."""

    def __init__(self):
        from nilearn import datasets  # heavy import, only when building

        t1 = datasets.load_mni152_template(resolution=2)
        self.affine = t1.affine
        self.t1 = np.asarray(t1.dataobj, dtype=np.float32)
        self.gm = np.asarray(datasets.load_mni152_gm_template(resolution=2).dataobj, dtype=np.float32)
        self.wm = np.asarray(datasets.load_mni152_wm_template(resolution=2).dataobj, dtype=np.float32)
        self.brain = np.asarray(datasets.load_mni152_brain_mask(resolution=2).dataobj, dtype=np.float32)
        self.shape = self.t1.shape
        self.world = self._world_grid()  # (3, X, Y, Z) mm
        csf = np.clip(self.brain - self.gm - self.wm, 0.0, 1.0)
        x, y, z = self.world
        central = (np.abs(x) < 30) & (y > -45) & (y < 30) & (z > -5) & (z < 35)
        self.ventricles = ((csf > 0.5) & central & (self.t1 < 0.35)).astype(np.float32)
        hippocampus = np.zeros(self.shape, dtype=np.float32)
        for centre in HIPPOCAMPUS_CENTRES_MM:
            d = (self.world - centre[:, None, None, None]) / HIPPOCAMPUS_SEMI_AXES_MM[:, None, None, None]
            hippocampus += (np.sum(d**2, axis=0) <= 1.0).astype(np.float32)
        self.hippocampus = np.clip(hippocampus, 0, 1) * (self.gm > 0.3)
        # signed distance to the ventricles' surface (mm, negative inside) and its unit normal
        inside = self.ventricles > 0
        distance = 2.0 * (distance_transform_edt(~inside) - distance_transform_edt(inside))
        self.ventricle_distance = gaussian_filter(distance, 1.0).astype(np.float32)
        gradient = np.stack(np.gradient(self.ventricle_distance))
        self.ventricle_normal = (gradient / (np.linalg.norm(gradient, axis=0) + 1e-6)).astype(np.float32)
        # neither warp changes a volume by an exactly known amount:
        # calibrate once so a requested volume factor gives that measured factor
        self.calibration = {
            "ventricles": self._calibrate(self.ventricles, self.inflate_ventricles, np.linspace(-3.0, 9.0, 25)),
            "hippocampus": self._calibrate(self.hippocampus, shrink_hippocampi, np.linspace(0.55, 2.0, 25)),
        }

    def to_voxels(self, points: np.ndarray) -> np.ndarray:
        inverse = np.linalg.inv(self.affine)
        return np.tensordot(inverse[:3, :3], points, axes=1) + inverse[:3, 3][:, None, None, None]

    def inflate_ventricles(self, points: np.ndarray, thickness: float) -> np.ndarray:
        """Backward map moving the ventricles' surface outward by `thickness` mm (inward if < 0).

        Each point samples from `thickness`·w(D) further in along the surface normal, with
        w = 1 inside and fading to 0 at VENTRICLE_REACH_MM outside, so nearby tissue is pushed
        away rather than magnified. An enlarging sample never goes deeper than 1 mm inside,
        so thin (slit-like) ventricles are not read across.
        """
        voxels = self.to_voxels(points)
        distance = map_coordinates(self.ventricle_distance, voxels, order=1, mode="nearest")
        move = thickness * np.clip(1.0 - np.maximum(distance, 0.0) / VENTRICLE_REACH_MM, 0.0, 1.0)
        if thickness > 0:
            move = np.clip(np.minimum(move, distance + 1.0), 0.0, None)
        moved = move != 0  # only points within reach move: look up normals for those alone
        normal = np.stack(
            [map_coordinates(g, voxels[:, moved], order=1, mode="nearest") for g in self.ventricle_normal]
        )
        out = points.copy()
        out[:, moved] -= move[moved] * normal
        return out

    def _calibrate(self, mask: np.ndarray, warp, parameters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log measured volume factor, warp parameter) over a grid of parameters, for np.interp."""
        # the warps only move points near the structure: measure on its bounding box + 30 mm
        found = np.argwhere(mask > 0)
        lo, hi = np.maximum(found.min(0) - 15, 0), found.max(0) + 16
        box = self.world[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        factors = [map_coordinates(mask, self.to_voxels(warp(box, p)), order=1).sum() / mask.sum() for p in parameters]
        return np.log(np.maximum.accumulate(factors)), parameters

    def warp_parameter(self, structure: str, volume_factor: float) -> float:
        """Warp parameter whose measured volume factor on the template is `volume_factor`."""
        log_factors, parameters = self.calibration[structure]
        return float(np.interp(np.log(volume_factor), log_factors, parameters))

    def _world_grid(self) -> np.ndarray:
        ijk = np.indices(self.shape, dtype=np.float32).reshape(3, -1)
        xyz = self.affine[:3, :3] @ ijk + self.affine[:3, 3:4]
        return xyz.reshape(3, *self.shape).astype(np.float32)


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """The template, built once per process (about 4 s)."""
    return Template()


def _radial_warp(points: np.ndarray, centre: np.ndarray, sigma: np.ndarray, scale: float) -> np.ndarray:
    """Backward map that scales space by `scale` near `centre`, fading with a Gaussian window.

    q = p − w(p)·(1 − 1/scale)·(p − c), w = exp(−½‖(p − c)/σ‖²). Invertible for the scales used.
    """
    d = points - centre[:, None, None, None]
    w = np.exp(-0.5 * np.sum((d / sigma[:, None, None, None]) ** 2, axis=0))
    return points - w * (1.0 - 1.0 / scale) * d


def shrink_hippocampi(points: np.ndarray, scale: float) -> np.ndarray:
    """Backward warp of (3, ...) world points that scales both hippocampi by `scale`."""
    for centre in HIPPOCAMPUS_CENTRES_MM:
        points = _radial_warp(points, centre, HIPPOCAMPUS_SIGMA_MM, scale)
    return points


def _bias_field(shape: tuple[int, int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field with values in about [1 − a, 1 + a]."""
    field = gaussian_filter(rng.normal(size=tuple(max(2, s // 8) for s in shape)), 1.0)
    field /= np.abs(field).max() + 1e-8
    zoom = [s / f for s, f in zip(shape, field.shape, strict=True)]
    coords = np.indices(shape, dtype=np.float32) / np.array(zoom, dtype=np.float32)[:, None, None, None]
    return 1.0 + amplitude * map_coordinates(field, coords, order=1, mode="nearest")


def sample_latents(n: int, trends: Trends, rng: np.random.Generator) -> pd.DataFrame:
    age = rng.uniform(trends.age_low, trends.age_high, n)
    male = rng.random(n) < 0.5
    years = age - trends.age_ref
    return pd.DataFrame(
        {
            "age": age,
            "male": male,
            "head_scale": 1.0 + trends.head_scale_male * male + rng.normal(0, trends.head_scale_sd, n),
            "ventricle_scale": np.exp(trends.ventricle_log_slope * years + rng.normal(0, trends.ventricle_log_sd, n)),
            "hippocampus_scale": np.exp(
                trends.hippocampus_log_slope * years + rng.normal(0, trends.hippocampus_log_sd, n)
            ),
            "gm_atrophy": np.clip(trends.gm_atrophy_slope * years + rng.normal(0, trends.gm_atrophy_sd, n), -0.1, 0.3),
            "bias_field": rng.uniform(0, trends.bias_field_max, n),
            "contrast": rng.uniform(trends.contrast_low, trends.contrast_high, n),
            "noise_sd": rng.uniform(trends.noise_sd_low, trends.noise_sd_high, n),
        }
    )


def synthesize_subject(template: Template, latent: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One subject's T1 volume (float32, template grid) and its measured volumes (mL)."""
    # 1. backward warp: output voxel world position → template position
    points = template.world
    points = (
        BRAIN_CENTRE_MM[:, None, None, None] + (points - BRAIN_CENTRE_MM[:, None, None, None]) / latent["head_scale"]
    )
    # ventricle_scale / hippocampus_scale are volume factors; the warp takes a calibrated linear scale
    # ventricle_scale / hippocampus_scale are volume factors; each warp takes a calibrated parameter
    points = template.inflate_ventricles(points, template.warp_parameter("ventricles", latent["ventricle_scale"]))
    points = shrink_hippocampi(points, template.warp_parameter("hippocampus", latent["hippocampus_scale"]))
    voxels = template.to_voxels(points)

    def warp(volume: np.ndarray) -> np.ndarray:
        return map_coordinates(volume, voxels, order=1, mode="constant", cval=0.0).astype(np.float32)

    t1, gm, brain = warp(template.t1), warp(template.gm), warp(template.brain)
    ventricles, hippocampus = warp(template.ventricles), warp(template.hippocampus)
    # 2. grey-matter atrophy: a fraction of GM becomes CSF outside the hippocampus
    atrophy = latent["gm_atrophy"] * gm * (1.0 - hippocampus)
    t1 = t1 - atrophy * (TISSUE_T1["gm"] - TISSUE_T1["csf"])
    gm_left = gm - atrophy
    # 3. nuisances: contrast, bias field, Rician noise
    t1 = np.clip(t1, 0.0, None) ** latent["contrast"]
    t1 = t1 * _bias_field(t1.shape, latent["bias_field"], rng)
    noise = latent["noise_sd"]
    t1 = np.sqrt((t1 + rng.normal(0, noise, t1.shape)) ** 2 + rng.normal(0, noise, t1.shape) ** 2)
    volumes = {
        "ventricle_volume": float(ventricles.sum() * VOXEL_ML),
        "hippocampal_volume": float(hippocampus.sum() * VOXEL_ML),
        "gm_volume": float(gm_left.sum() * VOXEL_ML),
        "icv": float(brain.sum() * VOXEL_ML),
    }
    return t1.astype(np.float32), volumes


def _logit(frame: pd.DataFrame, stats: dict, model: LabelModel, shortcut: bool) -> np.ndarray:
    def z(column):
        return (frame[column].to_numpy() - stats[column]["mean"]) / stats[column]["sd"]

    logit = model.intercept + model.ventricle * z("ventricle_volume") + model.hippocampus * z("hippocampal_volume")
    if shortcut:
        logit = logit + model.head_size_shortcut * z("icv")
    return logit


def label_probabilities(frame: pd.DataFrame, truth: dict, shortcut: bool = False) -> np.ndarray:
    """P(label = 1 | volumes) from the logistic model recorded in truth.json."""
    model = LabelModel(**truth["label_model"]["coefficients"])
    logit = _logit(frame, truth["label_model"]["standardisation"], model, shortcut)
    return 1.0 / (1.0 + np.exp(-logit))


def draw_labels(probabilities: np.ndarray, seed: int) -> np.ndarray:
    """label = 1 where U < p, with U ~ U(0, 1) from numpy's default_rng(seed)."""
    return (np.random.default_rng(seed).random(len(probabilities)) < probabilities).astype(int)


def _write_subject(out: Path, seed: int, i: int, latent: dict) -> dict:
    """Subject i's volume into `out/volumes/` (noise from default_rng([seed, i])); its table row."""
    template = load_template()
    t1, volumes = synthesize_subject(template, latent, np.random.default_rng([seed, i]))
    name = f"volumes/sub-{i:04d}_T1w.nii.gz"
    image = nib.Nifti1Image(t1, template.affine)
    image.header.set_xyzt_units("mm")
    image.set_data_dtype(np.int16)  # nibabel stores a scale factor; halves the files
    nib.save(image, out / name)
    return {"subject": f"sub-{i:04d}", "file": name, **volumes}


def build(
    out_dir: str | Path,
    n: int = 400,
    seed: int = 0,
    test_fraction: float = 0.3,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> Path:
    """Write `n` subjects' NIfTI volumes, `features.csv` and `truth.json`. Deterministic by seed: each
    subject's noise is its own (`default_rng([seed, i])`), so the files do not depend on `workers`
    (processes; default one a core)."""
    out = Path(out_dir)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    trends, label_model = Trends(), LabelModel()
    load_template()  # built before the workers start, so forked ones share it
    latents = sample_latents(n, trends, np.random.default_rng(seed))
    records = latents.to_dict("records")
    workers = min(n, workers or os.cpu_count() or 1)
    rows = []
    if workers <= 1:
        for i, latent in enumerate(records):
            rows.append(_write_subject(out, seed, i, latent))
            if progress:
                progress(i + 1, n)
    else:
        with ProcessPoolExecutor(workers) as pool:
            for row in pool.map(_write_subject, [out] * n, [seed] * n, range(n), records):
                rows.append(row)
                if progress:
                    progress(len(rows), n)
    table = pd.DataFrame(rows)
    n_test = int(round(n * test_fraction))
    table.insert(2, "split", ["train"] * (n - n_test) + ["test"] * n_test)
    table["age"] = latents["age"]
    table["sex"] = np.where(latents["male"], "M", "F")
    for column in ("bias_field", "contrast", "noise_sd"):
        table[column] = latents[column]
    # round as written, so labels recomputed from the CSV match exactly
    table = pd.read_csv(io.StringIO(table.to_csv(index=False, float_format="%.6g")))
    stats = {
        c: {"mean": float(table[c].mean()), "sd": float(table[c].std())}
        for c in ("ventricle_volume", "hippocampal_volume", "icv")
    }
    truth = {
        "dataset": "synthbrain",
        "seed": seed,
        "n": n,
        "template": "MNI152 ICBM 2009a symmetric, 2 mm (nilearn.datasets.load_mni152_template)",
        "voxel_size_mm": 2.0,
        "trends": asdict(trends),
        "warp": {
            "brain_centre_mm": BRAIN_CENTRE_MM.tolist(),
            "ventricles": "surface moved along the distance-field normal, fading over ventricle_reach_mm",
            "ventricle_reach_mm": VENTRICLE_REACH_MM,
            "hippocampus_centres_mm": [c.tolist() for c in HIPPOCAMPUS_CENTRES_MM],
            "hippocampus_sigma_mm": HIPPOCAMPUS_SIGMA_MM.tolist(),
        },
        "latent_effects": {
            "ventricle_volume": "increases with age (log-slope ventricle_log_slope per year) and head size",
            "hippocampal_volume": "decreases with age (log-slope hippocampus_log_slope per year), grows with head size",
            "gm_volume": "decreases with age (gm_atrophy_slope per year) and grows with head size",
            "icv": "head_scale^3 times the template's; men larger by head_scale_male",
        },
        "label_model": {
            "formula": "P(label=1) = sigmoid(intercept + ventricle*z(ventricle_volume) + "
            "hippocampus*z(hippocampal_volume) [+ head_size_shortcut*z(icv) for label_shortcut]), "
            "z(v) = (v - mean) / sd with the standardisation below",
            "coefficients": asdict(label_model),
            "standardisation": stats,
            "draw": "label = default_rng(seed).random(n) < p, seeds below",
            "label_seed": seed + 101,
            "label_shortcut_seed": seed + 202,
        },
    }
    probability = label_probabilities(table, truth)
    shortcut_probability = label_probabilities(table, truth, shortcut=True)
    table["label"] = draw_labels(probability, truth["label_model"]["label_seed"])
    table["label_shortcut"] = draw_labels(shortcut_probability, truth["label_model"]["label_shortcut_seed"])
    table.to_csv(out / "features.csv", index=False, float_format="%.6g")
    (out / "truth.json").write_text(json.dumps(truth, indent=2))
    return out
