"""The conditional curve E[f | A = a] and the distribution of outputs at one feature value.

The figures are built in `engine.reports.figures` (the HTML report uses the same builders); the
pages call them through this module.
"""

from __future__ import annotations

from engine.reports.figures import conditional_curve_figure, marked, output_distribution, prebuilt

__all__ = ["conditional_curve_figure", "marked", "output_distribution", "prebuilt"]
