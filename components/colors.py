"""One colour per feature, the same on every page, and the colours of the score sources.

They live in `engine.reports.figures` with the figures that use them (the HTML report draws with
the same colours); this module keeps the pages' `colors.feature_colors(...)` working.
"""

from __future__ import annotations

from engine.reports.figures import PALETTE, SOURCE_COLORS, SOURCE_LABELS, SOURCE_PATTERNS, feature_colors

__all__ = ["PALETTE", "SOURCE_COLORS", "SOURCE_LABELS", "SOURCE_PATTERNS", "feature_colors"]
