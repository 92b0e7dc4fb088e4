"""Maps per second of each captum baseline on the CPU, batched vs one image at a time.

Model: the zoo's `synthbrain-diagnosis` CNN if it is built, else the same SmallCNN with
fresh weights (the same cost). Images: random (B, 1, 64, 64) in [0, 1] — the cost of a
map does not depend on the pixel values. Each method's defaults (IG: 50 steps; GradientShap:
16 samples; SmoothGrad: 16 samples; Occlusion: 8-pixel window, stride 4).

Run: .venv/bin/python benchmarks/bench_baselines.py [--n 16] [--threads 1] [--methods Saliency,Occlusion]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from engine.errors import EveInputError  # noqa: E402
from engine.models.architectures import SmallCNN  # noqa: E402
from engine.models.train import SMALL_CNN  # noqa: E402
from engine.models.zoo import load_model  # noqa: E402
from engine.pixelmaps.methods import METHODS, attribution_map  # noqa: E402


def model_under_test() -> tuple[torch.nn.Module, str]:
    try:
        model, _ = load_model("synthbrain-diagnosis")
        return model, "synthbrain-diagnosis"
    except EveInputError:
        torch.manual_seed(0)
        return SmallCNN(**SMALL_CNN).eval(), "SmallCNN (fresh weights; zoo not built)"


def rate(model, images: torch.Tensor, method: str, batch_size: int, repeats: int) -> float:
    """Best of `repeats` timed runs (the machine is shared: the best run is the least disturbed)."""
    attribution_map(model, images[:batch_size], method, batch_size=batch_size)  # warm-up at this batch shape
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        attribution_map(model, images, method, batch_size=batch_size)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16, help="images per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is kept)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, name = model_under_test()
    images = torch.rand(args.n, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    print(f"model: {name}; {args.n} images 64x64; torch {torch.__version__}, {args.threads} thread(s)")
    print(f"{'method':<22}{'batched maps/s':>16}{'one-at-a-time maps/s':>24}{'speed-up':>10}")
    for method in args.methods.split(","):
        batched = rate(model, images, method, args.n, args.repeats)
        single = rate(model, images, method, 1, args.repeats)
        print(f"{method:<22}{batched:>16.1f}{single:>24.1f}{batched / single:>9.1f}x", flush=True)


if __name__ == "__main__":
    main()
