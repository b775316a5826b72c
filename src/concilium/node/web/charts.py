"""Charts for the result pages as inline SVG, made on the server (the pages run no
script): a bar chart of a grouped result and the ROC curve of an evaluation.
Both draw only released values; every label is escaped. Each chart has a
``<title>`` and a ``<desc>`` stating its numbers, for screen readers, and uses
presentation attributes only (the pages' Content-Security-Policy allows no
inline style)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart", "roc_chart"]

_WIDTH, _HEIGHT, _MARGIN = 640, 320, 48


def _frame(title: str, description: str, body: list[str]) -> str:
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
        f'width="{_WIDTH}" height="{_HEIGHT}" role="img" aria-labelledby="chart-title '
        'chart-desc">',
        f'<title id="chart-title">{escape(title)}</title>',
        f'<desc id="chart-desc">{escape(description)}</desc>', *body, "</svg>"])


def bar_chart(groups: Sequence[str], values: Sequence[float], label: str) -> str:
    """Vertical bars, one per group, with the value above each bar."""
    plot_width, plot_height = _WIDTH - 2 * _MARGIN, _HEIGHT - 2 * _MARGIN
    top = max([abs(v) for v in values] + [1e-12])
    slot = plot_width / max(1, len(values))
    body = [f'<line x1="{_MARGIN}" y1="{_HEIGHT - _MARGIN}" x2="{_WIDTH - _MARGIN}" '
            f'y2="{_HEIGHT - _MARGIN}" stroke="#333" stroke-width="1"/>']
    for index, (group, value) in enumerate(zip(groups, values, strict=True)):
        height = plot_height * abs(value) / top
        x = _MARGIN + index * slot + slot * 0.15
        y = _HEIGHT - _MARGIN - height
        body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
                    f'height="{height:.1f}" fill="#2f6f9f"/>')
        body.append(f'<text x="{x + slot * 0.35:.1f}" y="{y - 4:.1f}" font-size="12" '
                    f'text-anchor="middle" fill="#111">{value:g}</text>')
        body.append(f'<text x="{x + slot * 0.35:.1f}" y="{_HEIGHT - _MARGIN + 16:.1f}" '
                    f'font-size="12" text-anchor="middle" fill="#111">'
                    f'{escape(group[:18])}</text>')
    description = f"{label} by group: " + "; ".join(
        f"{group} {value:g}" for group, value in zip(groups, values, strict=True))
    return _frame(f"{label} by group", description, body)


def roc_chart(points: Sequence[Sequence[float]]) -> str:
    """The ROC curve through the released points ``[threshold, fpr, tpr]`` and the
    curve's fixed ends (0, 0) and (1, 1), over the chance diagonal."""
    size = _HEIGHT - 2 * _MARGIN
    left, bottom = _MARGIN + 40, _HEIGHT - _MARGIN

    def at(fpr: float, tpr: float) -> str:
        return f"{left + size * fpr:.1f},{bottom - size * tpr:.1f}"

    curve = [(0.0, 0.0), *sorted((float(p[1]), float(p[2])) for p in points), (1.0, 1.0)]
    body = [
        f'<rect x="{left}" y="{bottom - size}" width="{size}" height="{size}" fill="none" '
        'stroke="#333" stroke-width="1"/>',
        f'<line x1="{left}" y1="{bottom}" x2="{left + size}" y2="{bottom - size}" '
        'stroke="#999" stroke-dasharray="4 4" stroke-width="1"/>',
        f'<polyline points="{" ".join(at(x, y) for x, y in curve)}" fill="none" '
        'stroke="#2f6f9f" stroke-width="2"/>',
        *[f'<circle cx="{at(float(p[1]), float(p[2])).split(",")[0]}" '
          f'cy="{at(float(p[1]), float(p[2])).split(",")[1]}" r="4" fill="#b5462f"/>'
          for p in points],
        f'<text x="{left + size / 2}" y="{bottom + 32}" font-size="12" text-anchor="middle" '
        'fill="#111">false positive rate</text>',
        f'<text x="{left - 30}" y="{bottom - size / 2}" font-size="12" text-anchor="middle" '
        f'fill="#111" transform="rotate(-90 {left - 30} {bottom - size / 2})">'
        'true positive rate</text>',
        f'<text x="{left}" y="{bottom + 16}" font-size="11" fill="#111">0</text>',
        f'<text x="{left + size - 6}" y="{bottom + 16}" font-size="11" fill="#111">1</text>',
        f'<text x="{left - 14}" y="{bottom - size + 4}" font-size="11" fill="#111">1</text>']
    description = "ROC curve through the released points: " + "; ".join(
        f"at p > {p[0]:g}, false positive rate {p[1]:g}, true positive rate {p[2]:g}"
        for p in points)
    return _frame("ROC curve", description, body)
