"""The FID-against-IS figure (the CCA paper's Figure 4): the base model's guidance sweep, one CCA
model per λ and the λ-conditioned model, with 95% intervals as error bars in both directions.

Drawn with matplotlib when it is installed (``pip install 'alignkit[plot]'``: a PNG and an SVG),
else with PIL (a PNG only, simpler ticks).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from alignkit.files import atomic_write

SERIES = (("CFG sweep of the base model (labels: s)", "cfg", "guidance", "#c83c28"),
          ("CCA, one model per λ, no guidance (labels: λ)", "cca_lambda", "lambda", "#285ac8"),
          ("CCA, one model for every λ (test-time λ)", "cca_test_time_lambda", "lambda", "#1e963c"))


def _points(sweeps: dict[str, list[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    return [p for p in sweeps.get(key, []) if p.get("fid") and p["fid"] > 0 and p.get("is") is not None]


def plot_sweeps(sweeps: dict[str, list[dict[str, Any]]], stem: Path, backbone: str) -> list[Path]:
    """Write ``stem.png`` (and ``stem.svg`` with matplotlib); returns the files written."""
    try:
        import matplotlib
    except ImportError:
        return [_plot_pil(sweeps, stem.with_suffix(".png"), backbone)]
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for label, key, knob, colour in SERIES:
        points = _points(sweeps, key)
        if not points:
            continue
        xs, ys = [p["fid"] for p in points], [p["is"] for p in points]
        xerr = [[p["fid"] - (p.get("fid_ci95") or [p["fid"]] * 2)[0] for p in points],
                [(p.get("fid_ci95") or [p["fid"]] * 2)[1] - p["fid"] for p in points]]
        yerr = [[p["is"] - (p.get("is_ci95") or [p["is"]] * 2)[0] for p in points],
                [(p.get("is_ci95") or [p["is"]] * 2)[1] - p["is"] for p in points]]
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, color=colour, marker="o", capsize=3, label=label)
        for p in points:
            ax.annotate(f"{p[knob]:g}", (p["fid"], p["is"]), textcoords="offset points", xytext=(5, 5),
                        color=colour, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("FID on classifier features (log scale; lower is better)")
    ax.set_ylabel("IS on classifier probabilities (higher is better)")
    ax.set_title(f"FID vs IS, {backbone}: mean and 95% interval over seeds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written = []
    for suffix in (".png", ".svg"):
        path = stem.with_suffix(suffix)
        atomic_write(path, lambda tmp, s=suffix: fig.savefig(tmp, format=s[1:]))
        written.append(path)
    plt.close(fig)
    return written


def _plot_pil(sweeps: dict[str, list[dict[str, Any]]], path: Path, backbone: str,
              size: tuple[int, int] = (700, 500)) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    left, top, right, bottom = 70, 80, size[0] - 20, size[1] - 60
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    draw.text((left, 8), f"FID vs IS ({backbone}, classifier features; bars: 95% intervals)", fill=(0, 0, 0),
              font=font)
    draw.text(((left + right) // 2 - 90, size[1] - 25), "FID (log scale, lower is better)", fill=(0, 0, 0), font=font)
    draw.text((5, (top + bottom) // 2), "IS", fill=(0, 0, 0), font=font)
    everything = [p for _, key, _, _ in SERIES for p in _points(sweeps, key)]
    if everything:
        fids = [v for p in everything for v in (p.get("fid_ci95") or [p["fid"]] * 2) if v > 0] + \
            [p["fid"] for p in everything]
        scores = [v for p in everything for v in (p.get("is_ci95") or [p["is"]] * 2)]
        x0, x1 = _padded(math.log10(min(fids)), math.log10(max(fids)))
        y0, y1 = _padded(min(scores), max(scores))

        def at(fid: float, score: float) -> tuple[float, float]:
            return (left + (math.log10(max(fid, 1e-9)) - x0) / (x1 - x0) * (right - left),
                    bottom - (score - y0) / (y1 - y0) * (bottom - top))

        for i in range(5):
            fx, fy = 10 ** (x0 + i * (x1 - x0) / 4), y0 + i * (y1 - y0) / 4
            draw.text((at(fx, y0)[0] - 12, bottom + 6), f"{fx:.3g}", fill=(80, 80, 80), font=font)
            draw.text((left - 40, at(10 ** x0, fy)[1] - 6), f"{fy:.2f}", fill=(80, 80, 80), font=font)
        for index, (label, key, knob, colour) in enumerate(SERIES):
            points = _points(sweeps, key)
            coords = [at(p["fid"], p["is"]) for p in points]
            if len(coords) > 1:
                draw.line(coords, fill=colour, width=2)
            for p, (cx, cy) in zip(points, coords):
                lo, hi = p.get("fid_ci95") or [p["fid"]] * 2
                draw.line([at(max(lo, 1e-9), p["is"]), at(hi, p["is"])], fill=colour)
                lo, hi = p.get("is_ci95") or [p["is"]] * 2
                draw.line([at(p["fid"], lo), at(p["fid"], hi)], fill=colour)
                draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=colour)
                draw.text((cx + 6, cy - 12), f"{p[knob]:g}", fill=colour, font=font)
            draw.text((left + 10, 28 + 16 * index), f"- {label.replace('λ', 'lambda')}", fill=colour, font=font)
    atomic_write(path, lambda p: image.save(p, format="PNG"))
    return path


def _padded(low: float, high: float) -> tuple[float, float]:
    span = high - low or max(abs(high), 1.0) * 0.1
    return low - 0.1 * span, high + 0.1 * span
