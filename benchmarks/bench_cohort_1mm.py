"""Volumes per second for a cohort at 1 mm, and what bounds it.

Writes a cohort of N copies of Colin27 (Debian's mricron-data: 181 x 217 x 181, 1 mm, uint8,
gzip), each with its own intensity gain so no two files are alike, then times, per volume,
the steps a cold `python -m engine score` pays before the disk cache exists: reading the
gzip file (nibabel, decode + scaling to float32), reorienting to RAS, the intensity rule,
slicing + resizing to the model's input, and the model's forward pass (the zoo's
synthbrain-diagnosis CNN, batch 1). It streams: one volume in memory at a time. A warm run
reads the model inputs from Eve's disk cache instead; its time is printed too.

Run: .venv/bin/python benchmarks/bench_cohort_1mm.py [--n 40]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from engine.data import load_dataset  # noqa: E402
from engine.data.slicing import apply_intensity, extract_slice, to_square  # noqa: E402
from engine.models import load_model  # noqa: E402
from engine.scores.service import model_outputs  # noqa: E402

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")


def write_cohort(folder: Path, n: int, seed: int = 0) -> None:
    """n copies of Colin27 in `folder`, each with an intensity gain from `seed`'s generator, and their features.csv
    (`file`, `gain`)."""
    template = nib.load(COLIN)
    data = np.asarray(template.dataobj, np.float32)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        gain = rng.uniform(0.8, 1.2)
        image = nib.Nifti1Image(np.clip(data * gain, 0, 255).astype(np.uint8), template.affine, template.header)
        nib.save(image, folder / f"sub-{i:03d}.nii.gz")
        rows.append({"file": f"sub-{i:03d}.nii.gz", "gain": gain})
    pd.DataFrame(rows).to_csv(folder / "features.csv", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="volumes in the cohort")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, card = load_model("synthbrain-diagnosis")
    spec = card.spec
    steps = dict.fromkeys(("read gzip + decode", "reorient to RAS", "intensity rule", "slice + resize", "forward"), 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_cohort(folder, args.n)
        start = time.perf_counter()
        dataset = load_dataset(folder)
        headers = time.perf_counter() - start
        for name in dataset.table["file"]:
            t0 = time.perf_counter()
            image = nib.load(folder / name)
            data = np.asarray(image.dataobj, np.float32)
            t1 = time.perf_counter()
            canonical = nib.as_closest_canonical(nib.Nifti1Image(data, image.affine))
            volume = np.asarray(canonical.dataobj, np.float32)
            t2 = time.perf_counter()
            scaled = apply_intensity(volume, spec.intensity)
            t3 = time.perf_counter()
            cut = extract_slice(scaled, canonical.affine, spec.plane, spec.index)
            x = to_square(torch.from_numpy(cut.copy())[None, None], spec.size).clamp_(0, 1)
            t4 = time.perf_counter()
            with torch.inference_mode():
                model(x)
            t5 = time.perf_counter()
            for key, seconds in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                steps[key] += seconds
        start, cpu = time.perf_counter(), time.process_time()
        for name in dataset.table["file"]:  # the decode limit: read and decode every file, nothing else
            np.asarray(nib.load(folder / name).dataobj, np.float32)
        decode, decode_cpu = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        model_outputs(model, dataset, spec)  # Eve's own path: slices every volume, caches them on disk
        cold, cold_cpu = time.perf_counter() - start, time.process_time() - cpu
        dataset._stacks.clear()  # a new process: the in-memory copy is gone, the disk cache stays
        start = time.perf_counter()
        model_outputs(model, dataset, spec)
        warm = time.perf_counter() - start
    total = sum(steps.values())
    print(f"{args.n} volumes of {nib.load(COLIN).shape} at 1 mm (uint8, gzip), 1 torch thread")
    print(f"  header checks (load_dataset): {headers:.2f} s ({args.n / headers:.0f} volumes/s)")
    for key, seconds in steps.items():
        print(f"  {key:<20} {1000 * seconds / args.n:7.1f} ms/volume  ({100 * seconds / total:4.1f}%)")
    print(f"  sum of the steps: {args.n / total:.1f} volumes/s")
    print(f"  decode alone (read + decode to float32, one thread): {args.n / decode:.1f} volumes/s")
    print(
        f"  Eve's model_outputs, cold (slices and caches every volume; the next file read in a second thread): "
        f"{args.n / cold:.1f} volumes/s, {1000 * cold_cpu / args.n:.1f} CPU-ms a volume = "
        f"{cold_cpu / decode_cpu:.2f}x the decode's {1000 * decode_cpu / args.n:.1f} CPU-ms"
    )
    print(f"  Eve's model_outputs, warm (from the disk cache): {args.n / warm:.0f} volumes/s")


if __name__ == "__main__":
    main()
