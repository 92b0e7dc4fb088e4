"""Maps from one model shared by several sessions' threads at once are each the map a lone call gives
(hook-based methods used to break each other: captum's hooks sit on the shared modules while they run)."""

from concurrent.futures import ThreadPoolExecutor

import torch

from engine.models.architectures import SmallCNN
from engine.pixelmaps import methods

HOOKED = ["DeepLift", "GuidedBackprop", "LayerGradCam", "LRP"]


def test_hook_based_maps_of_a_shared_model_are_right_under_concurrency():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SmallCNN(size=32, widths=(4, 8), pooled=2, hidden=0, dropout=0.0).eval()
    images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    alone = {m: methods.attribution_map(model, images, m, target=0) for m in HOOKED}
    calls = [m for m in HOOKED for _ in range(6)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda m: (m, methods.attribution_map(model, images, m, target=0)), calls))
    for m, maps in together:
        torch.testing.assert_close(maps, alone[m], rtol=1e-5, atol=1e-6, msg=m)
    plain = methods.attribution_map(model, images, "Saliency", target=0)  # the shared model keeps no hook
    assert not any(module._forward_hooks or module._backward_hooks for module in model.modules())
    assert torch.isfinite(plain).all()
