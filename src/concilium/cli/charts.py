"""Text charts for a terminal: the ROC curve of an evaluation, drawn from the points
the output policy released (and the curve's fixed ends (0, 0) and (1, 1)), never
from anything else."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

__all__ = ["roc_chart"]


def roc_chart(points: Sequence[Sequence[float]], *, width: int = 41, height: int = 17) -> str:
    """The ROC curve as text: false positive rate across, true positive rate up.
    ``points`` are ``[threshold, fpr, tpr]``; released points are ``o``, the straight
    segments between them (and to the ends) ``.``, the chance diagonal ``-``."""
    grid = [[" "] * width for _ in range(height)]

    def cell(x: float, y: float) -> tuple[int, int]:
        column = round(min(max(x, 0.0), 1.0) * (width - 1))
        return height - 1 - round(min(max(y, 0.0), 1.0) * (height - 1)), column

    steps = 4 * max(width, height)
    for k in range(steps + 1):  # the chance diagonal, under the curve
        row, column = cell(k / steps, k / steps)
        grid[row][column] = "-"
    curve = [(0.0, 0.0), *sorted((float(p[1]), float(p[2])) for p in points), (1.0, 1.0)]
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        for k in range(steps + 1):
            row, column = cell(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps)
            grid[row][column] = "."
    for _, x, y in points:
        row, column = cell(float(x), float(y))
        grid[row][column] = "o"
    lines = []
    for index, characters in enumerate(grid):
        label = "1.0" if index == 0 else "0.0" if index == height - 1 else "   "
        lines.append(f"{label} |{''.join(characters)}")
    lines.append("    +" + "-" * width)
    lines.append("     0.0" + " " * (width - 9) + "1.0")
    lines.append("     true positive rate (up) against false positive rate (across)")
    return "\n".join(lines)
