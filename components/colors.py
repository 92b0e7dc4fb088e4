"""One colour per feature, the same on every page, and the colours of the score sources."""

from __future__ import annotations

# Okabe-Ito (colour-blind safe) first, then Plotly's Dark24 for longer feature lists.
PALETTE = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
    "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#B68100", "#750D86", "#EB663B",
)  # fmt: skip

# how a score was obtained -> bar colour/pattern
SOURCE_COLORS = {"data": "#0072B2", "diffusion": "#E69F00", "truth": "#555555"}
SOURCE_PATTERNS = {"data": "", "diffusion": "/", "truth": "."}
SOURCE_LABELS = {"data": "from data", "diffusion": "from diffusion samples", "truth": "ground truth"}


def feature_colors(features: list[str]) -> dict[str, str]:
    """Feature name -> colour, by the feature's position in the dataset's feature list.

    Every page passes the dataset's own `Dataset.features` list, so a feature keeps its
    colour across pages for a dataset.
    """
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(features)}
