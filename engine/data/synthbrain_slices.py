"""Extra SynthBrain training slices, cheaply: one 2D slice per subject, not a whole volume.

The 400-subject default set is all the *data* Eve has; the diffusion model is trained on
its train split plus extra subjects drawn from the same generator (`engine.data.synthbrain`,
same `Trends`, same warp, same nuisances). Writing a full volume costs ~0.6 s a subject on
this CPU; here only what one slice and the four volumes need is computed (~0.05 s):

* the slice plane at full resolution (the warp, the tissue maps, bias field, Rician noise);
* the intensity scale (99th percentile of the volume's non-zero voxels, see
  `engine.data.slicing.normalise_intensity`) on a stride-2 grid of the volume;
* ventricle and hippocampal volumes at full resolution in a box around them;
* grey-matter and intracranial volumes on the stride-2 grid (x 8).

`check_against_full` compares both paths on the same latents (volumes to ~0.1-0.5 %, the
slice to the noise level); the training script records its numbers in the card.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from engine.data import synthbrain as sb
from engine.data.defaults import data_dir
from engine.data.slicing import PLANE_AXIS, SliceSpec, model_input, slice_index, to_square

# full-resolution box (world mm, subject space) that holds the ventricles and hippocampi
_BOX_MM = np.array([[-50.0, 50.0], [-80.0, 56.0], [-44.0, 58.0]])
CACHE_VERSION = 1  # bump when this module's output changes (the cache key also hashes synthbrain.py)
_COARSE = 2  # stride of the grid used for the intensity scale and the large volumes
# the stride-2 grid over-counts GM by 0.55 % (partial-volume edges; mean of 12 subjects,
# sd 0.1 %, measured with check_against_full): divide it out
GM_COARSE_CORRECTION = 1.0 / 1.0055


def _warp_points(points: np.ndarray, latent: dict, template: sb.Template) -> np.ndarray:
    """Backward warp (3, ...) world points with the generator's own warp functions, in the
    order of `synthbrain.synthesize_subject` (checked by `check_against_full`)."""
    shape = points.shape
    p = points.reshape(3, -1, 1, 1)
    c = sb.BRAIN_CENTRE_MM[:, None, None, None]
    p = c + (p - c) / latent["head_scale"]
    p = template.inflate_ventricles(p, template.warp_parameter("ventricles", latent["ventricle_scale"]))
    p = sb.shrink_hippocampi(p, template.warp_parameter("hippocampus", latent["hippocampus_scale"]))
    return p.reshape(shape)


class SliceSynthesizer:
    """Draws (slice, features) pairs for new SynthBrain subjects at one `SliceSpec`.

    Trilinear sampling of the template maps is done with `torch.nn.functional.grid_sample`
    (align_corners=True, zero padding), which equals scipy's order-1 `map_coordinates`
    with cval 0 that the full generator uses, all maps in one call.
    """

    MAPS = ("t1", "gm", "brain", "ventricles", "hippocampus")

    def __init__(self, spec: SliceSpec, template: sb.Template | None = None):
        self.template = template or sb.load_template()
        self.spec = spec
        t = self.template
        axis = PLANE_AXIS[spec.plane]
        self.k = slice_index(t.shape, t.affine, spec.plane, spec.index)
        cut = [slice(None)] * 3
        cut[axis] = slice(self.k, self.k + 1)
        self.axis = axis
        idx = np.indices(t.shape, dtype=np.float32)
        self.plane_idx = idx[(slice(None), *cut)]  # (3, ...) voxel indices
        self.plane_world = t.world[(slice(None), *cut)]
        s = _COARSE
        self.coarse_idx = idx[:, ::s, ::s, ::s]
        self.coarse_world = t.world[:, ::s, ::s, ::s]
        inside = np.all((t.world >= _BOX_MM[:, 0, None, None, None]) & (t.world <= _BOX_MM[:, 1, None, None, None]), 0)
        self.box_world = t.world[:, inside]  # (3, M)
        self.inverse = np.linalg.inv(t.affine)
        self.maps = torch.from_numpy(np.stack([getattr(t, m) for m in self.MAPS]).astype(np.float32))[None]

    def _grid(self, voxels: np.ndarray, shape) -> torch.Tensor:
        """(3, ...) voxel coordinates -> grid_sample grid (1, M, 1, 1, 3), last axis (z, y, x) in [-1, 1]."""
        v = voxels.reshape(3, -1)
        norm = [2.0 * v[i] / (shape[i] - 1) - 1.0 for i in (2, 1, 0)]
        return torch.from_numpy(np.stack(norm, -1).astype(np.float32))[None, :, None, None]

    def _sample(self, world: np.ndarray) -> dict[str, np.ndarray]:
        """All template maps at (3, ...) world points, each shaped like world[0]."""
        voxels = np.tensordot(self.inverse[:3, :3], world.reshape(3, -1), axes=1) + self.inverse[:3, 3:4]
        out = F.grid_sample(
            self.maps,
            self._grid(voxels, self.template.shape),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )[0, :, :, 0, 0].numpy()
        return {m: out[i].reshape(world.shape[1:]) for i, m in enumerate(self.MAPS)}

    def _bias(self, idx: np.ndarray, field: np.ndarray) -> np.ndarray:
        zoom = np.array([s / f for s, f in zip(self.template.shape, field.shape, strict=True)], dtype=np.float32)
        coords = idx.reshape(3, -1) / zoom[:, None]
        grid = self._grid(coords, field.shape)
        out = F.grid_sample(
            torch.from_numpy(field.astype(np.float32))[None, None],
            grid,
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )
        return out[0, 0, :, 0, 0].numpy().reshape(idx.shape[1:])

    def subject(self, latent: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """One subject: the normalised (size, size) slice (float32) and its measured volumes (mL)."""
        t = self.template
        # 1. warp the three point sets (slice plane, coarse grid, structure box) and sample the maps
        plane = self._sample(_warp_points(self.plane_world, latent, t))
        coarse = self._sample(_warp_points(self.coarse_world, latent, t))
        box = self._sample(_warp_points(self.box_world, latent, t))
        # 2. volumes: structures at full resolution, brain and GM on the coarse grid
        factor = sb.VOXEL_ML * _COARSE**3
        gm_left = coarse["gm"] - latent["gm_atrophy"] * coarse["gm"] * (1.0 - coarse["hippocampus"])
        volumes = {
            "ventricle_volume": float(box["ventricles"].sum(dtype=np.float64) * sb.VOXEL_ML),
            "hippocampal_volume": float(box["hippocampus"].sum(dtype=np.float64) * sb.VOXEL_ML),
            "gm_volume": float(gm_left.sum(dtype=np.float64) * factor) * GM_COARSE_CORRECTION,
            "icv": float(coarse["brain"].sum(dtype=np.float64) * factor),
        }
        # 3. intensities (plane and coarse grid), as in synthesize_subject
        field = gaussian_filter(rng.normal(size=tuple(max(2, s // 8) for s in t.shape)), 1.0)
        field /= np.abs(field).max() + 1e-8
        noise = latent["noise_sd"]

        def intensity(maps, idx):
            t1 = maps["t1"] - latent["gm_atrophy"] * maps["gm"] * (1.0 - maps["hippocampus"]) * (
                sb.TISSUE_T1["gm"] - sb.TISSUE_T1["csf"]
            )
            t1 = np.clip(t1, 0.0, None) ** latent["contrast"]
            t1 = t1 * (1.0 + latent["bias_field"] * self._bias(idx, field))
            return np.sqrt((t1 + rng.normal(0, noise, t1.shape)) ** 2 + rng.normal(0, noise, t1.shape) ** 2)

        plane_t1 = intensity(plane, self.plane_idx)
        coarse_t1 = intensity(coarse, self.coarse_idx)
        # 4. normalise by the volume's 99th percentile (coarse grid), orient and resize
        fg = coarse_t1[coarse_t1 > 0]
        scale = np.percentile(fg, 99) if fg.size else 1.0
        cut = np.clip(plane_t1 / scale, 0.0, 1.0).squeeze(self.axis)  # (a, b) in RAS order
        image = np.ascontiguousarray(cut.T[::-1]).astype(np.float32)
        tensor = to_square(torch.from_numpy(image.copy())[None, None], self.spec.size).clamp_(0.0, 1.0)
        return tensor[0, 0].numpy(), volumes


def features_table(latents: pd.DataFrame, volumes: list[dict]) -> pd.DataFrame:
    """The dataset's feature columns (as in `features.csv`) for synthesized subjects."""
    table = pd.DataFrame(volumes)
    table["age"] = latents["age"].to_numpy()
    table["sex"] = np.where(latents["male"].to_numpy(), "M", "F")
    for column in ("bias_field", "contrast", "noise_sd"):
        table[column] = latents[column].to_numpy()
    return table


def _subjects(spec: SliceSpec, seed: int, latents: list[dict], first: int, progress=None):
    torch.set_num_threads(1)
    synthesizer = SliceSynthesizer(spec)
    out = []
    for i, latent in enumerate(latents):
        out.append(synthesizer.subject(latent, np.random.default_rng([seed, first + i])))
        if progress:
            progress(first + i + 1)
    return out


def synthesize(
    n: int,
    spec: SliceSpec,
    seed: int = 1000,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """n new subjects: slices (n, 1, size, size) float32 and their feature table.

    Latents come from `synthbrain.sample_latents(n, Trends(), default_rng(seed))` and subject
    i's noise from `default_rng([seed, i])` (the default set uses seed 0: use another so no
    subject repeats). The result does not depend on `workers` (processes).
    """
    latents = sb.sample_latents(n, sb.Trends(), np.random.default_rng(seed))
    records = latents.to_dict("records")
    if workers <= 1:
        results = _subjects(spec, seed, records, 0, progress and (lambda i: progress(i, n)))
    else:
        chunks = np.array_split(np.arange(n), workers)
        with ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(_subjects, spec, seed, [records[i] for i in c], int(c[0])) for c in chunks if len(c)]
            results = [r for f in futures for r in f.result()]
        if progress:
            progress(n, n)
    images = np.stack([image for image, _ in results])[:, None]
    return torch.from_numpy(images), features_table(latents, [vol for _, vol in results])


def check_against_full(spec: SliceSpec, n: int = 3, seed: int = 7, synthesizer: SliceSynthesizer | None = None):
    """Relative volume errors and the slice RMS difference of this path vs the full generator."""
    synthesizer = synthesizer or SliceSynthesizer(spec)
    latents = sb.sample_latents(n, sb.Trends(), np.random.default_rng(seed))
    rows = []
    for i, latent in enumerate(latents.to_dict("records")):
        volume, full = sb.synthesize_subject(synthesizer.template, latent, np.random.default_rng([seed, i]))
        reference = model_input(volume, synthesizer.template.affine, spec)[0, 0].numpy()
        image, cheap = synthesizer.subject(latent, np.random.default_rng([seed, i, 1]))
        row = {f"{k}_rel_err": cheap[k] / full[k] - 1 for k in full}
        row["slice_rms_diff"] = float(np.sqrt(np.mean((image - reference) ** 2)))
        rows.append(row)
    return pd.DataFrame(rows)


def extra_cache_path(n: int, spec: SliceSpec, seed: int) -> Path:
    # keyed by the generator's source too: a changed generator never reuses stale subjects
    version = hashlib.sha1(Path(sb.__file__).read_bytes()).hexdigest()[:10] + f"v{CACHE_VERSION}"
    return data_dir() / ".cache" / f"synthbrain-extra-{spec.key}-n{n}-seed{seed}-{version}.npz"


def cached_extra_subjects(
    n: int, spec: SliceSpec, seed: int = 1000, progress: Callable[[int, int], None] | None = None, workers: int = 1
) -> tuple[torch.Tensor, pd.DataFrame]:
    """`synthesize(n, spec, seed)`, cached in `<data dir>/.cache/` (git-ignored)."""
    path = extra_cache_path(n, spec, seed)
    if path.is_file():
        stored = np.load(path, allow_pickle=False)
        table = pd.DataFrame({c: stored[f"col_{c}"] for c in stored["columns"]})
        return torch.from_numpy(stored["images"]), table
    images, table = synthesize(n, spec, seed, progress, workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.npz")
    # no object arrays: text columns as unicode, so loading never needs pickle
    columns = {f"col_{c}": table[c].to_numpy(dtype=None if table[c].dtype.kind in "biuf" else str) for c in table}
    np.savez(tmp, images=images.numpy(), columns=np.array(table.columns, dtype=str), **columns)
    tmp.rename(path)
    return images, table
