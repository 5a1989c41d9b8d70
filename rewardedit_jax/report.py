"""The evaluation's human-readable outputs: image grids per edit type and ``report.html``; atomic writes.

Used by :mod:`rewardedit_jax.evaluate` (docs/evaluation.md), evaluation during training and ``edit``.
Every file is written atomically (a temporary file renamed into place, or a single upload to an object
store; see :mod:`rewardedit_jax.io`), so an interrupted run never leaves a half-written ``results.json``,
``report.html`` or grid. The report links the images by relative paths (``images/...``, ``inputs/...``), so
the output folder can be moved or served as is.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from io import BytesIO
from typing import Any

import numpy as np

from rewardedit_jax import io

PERSPECTIVES = ("following", "preserving", "quality")
PERSPECTIVE_TITLES = {"following": "following", "preserving": "preserving", "quality": "quality"}
# Extra metrics shown when present, with how many decimals.
METRICS = {
    "l1": ("L1", 4),
    "l2": ("L2", 4),
    "clip_i": ("CLIP-I", 4),
    "clip_t": ("CLIP-T", 4),
    "dino": ("DINO", 4),
}

# ----------------------------------------------------------------------------------------------------
# Writing.


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` (local or remote) so that no reader sees a partly written file."""
    io.atomic_write_bytes(path, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    io.write_json(path, value, sort_keys=False)


def png_bytes(image) -> bytes:
    """An RGB uint8 (H, W, 3) array as PNG bytes."""
    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def atomic_write_png(path: str | os.PathLike, image) -> None:
    """Write ``image`` (H, W, 3) uint8 as a PNG to ``path`` (local or remote), atomically."""
    atomic_write_bytes(path, png_bytes(image))


# ----------------------------------------------------------------------------------------------------
# Grids.


def _fit_into(image: np.ndarray, cell: int) -> np.ndarray:
    """Scale an image so its long side is ``cell`` (LANCZOS down, NEAREST up so tiny images stay crisp)."""
    from PIL import Image

    pil = Image.fromarray(np.asarray(image, np.uint8))
    scale = cell / max(pil.size)
    size = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
    if size != pil.size:
        method = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
        pil = pil.resize(size, method)
    return np.asarray(pil.convert("RGB"))


def make_grid(
    strips: Sequence[Sequence[np.ndarray]],
    *,
    cell: int = 128,
    columns: int = 4,
    gap: int = 4,
    margin: int = 12,
) -> np.ndarray:
    """One image of ``strips`` (rows of images, e.g. source | edited | target), ``columns`` strips per row.

    Each image is scaled into a ``cell`` x ``cell`` box (aspect kept, centred on white); images within a
    strip are ``gap`` pixels apart and strips ``margin`` pixels apart. Returns RGB uint8.
    """
    if not strips:
        raise ValueError("a grid needs at least one strip")
    per_strip = max(len(s) for s in strips)
    columns = max(1, min(columns, len(strips)))
    rows = math.ceil(len(strips) / columns)
    strip_w = per_strip * cell + (per_strip - 1) * gap
    width = columns * strip_w + (columns + 1) * margin
    height = rows * cell + (rows + 1) * margin
    canvas = np.full((height, width, 3), 255, np.uint8)
    for k, strip in enumerate(strips):
        top = margin + (k // columns) * (cell + margin)
        left = margin + (k % columns) * (strip_w + margin)
        for j, image in enumerate(strip):
            fitted = _fit_into(image, cell)
            h, w = fitted.shape[:2]
            y = top + (cell - h) // 2
            x = left + j * (cell + gap) + (cell - w) // 2
            canvas[y : y + h, x : x + w] = fitted
    return canvas


# ----------------------------------------------------------------------------------------------------
# report.html.

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.edit { width: 192px; height: auto; image-rendering: auto; }
img.tiny { image-rendering: pixelated; }
.yes { color: #17692b; font-weight: 600; }
.no { color: #a11; font-weight: 600; }
.failed { color: #a11; }
code { background: #f6f6f6; padding: 0 3px; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, decimals: int = 3) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return _esc(value)


def _aggregate_table(blocks: Mapping[str, Mapping[str, Any]]) -> str:
    metrics = [m for m in METRICS if any(b.get(m) is not None for b in blocks.values())]
    head = ["", "n", "failed"]
    head += [f"{PERSPECTIVE_TITLES[p]} {kind}" for p in PERSPECTIVES for kind in ("yes", "score")]
    head += [METRICS[m][0] for m in metrics]
    lines = ["<table>", "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    for name, block in blocks.items():
        cells = [f"<th>{_esc(name)}</th>", f'<td class="num">{_fmt(block.get("n"))}</td>']
        cells.append(f'<td class="num">{_fmt(block.get("failed"))}</td>')
        for p in PERSPECTIVES:
            yes = block.get(f"{p}_yes")
            cells.append(f'<td class="num">{"&ndash;" if yes is None else f"{100 * yes:.1f}%"}</td>')
            cells.append(f'<td class="num">{_fmt(block.get(f"{p}_score"), 2)}</td>')
        for m in metrics:
            cells.append(f'<td class="num">{_fmt(block.get(m), METRICS[m][1])}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _judgment_cell(judgment: Mapping[str, Any] | None, perspective: str) -> str:
    if judgment is None:
        return "<td>&ndash;</td>"
    failure = (judgment.get("failed") or {}).get(perspective)
    if failure is not None:
        return f'<td class="failed">failed: {_esc(failure)}</td>'
    verdict = judgment.get(perspective)
    if not verdict:
        return "<td>&ndash;</td>"
    answer = verdict.get("answer")
    css = "yes" if answer == "yes" else "no"
    return f'<td class="num"><span class="{css}">{_esc(answer)}</span> {_fmt(verdict.get("score"), 1)}</td>'


def _image_cell(path: str | None, tiny: bool) -> str:
    if path is None:
        return "<td>&ndash;</td>"
    css = "edit tiny" if tiny else "edit"
    return f'<td><a href="{_esc(path)}"><img class="{css}" src="{_esc(path)}" loading="lazy" alt=""></a></td>'


def _judge_text(config: dict) -> str | None:
    """The judge, its model and, for the GPT judge, whose prompts it used."""
    judge = config.get("judge")
    protocol = config.get("judge_protocol")
    if protocol is None:
        return judge
    source = {
        "official": "the official repository's gpt_eval prompts and requests",
        "project": "this project's own prompts",
    }.get(protocol, protocol)
    return f"{judge} ({config.get('judge_model')}), {protocol} protocol: {source}"


def render_report(
    results: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str = "Edit evaluation",
    grids: Mapping[str, str] | None = None,
    tiny_images: bool = False,
) -> str:
    """The HTML of ``report.html``.

    ``results``: the results dict (``overall``, ``by_edit_type``, ``config``). ``rows``: one per edit, with
    ``name``, ``edit_type``, ``instruction``, relative image paths ``source``, ``edited`` and optionally
    ``target``, ``judgment`` (perspective -> ``{"answer", "score"}``, and ``failed``: perspective -> reason)
    and ``metrics`` (``l1``, ``l2``, ``clip_i``, ``clip_t``, ``dino``). ``grids``: edit type -> relative grid
    path.
    """
    config = results.get("config", {})
    has_target = any(r.get("target") for r in rows)
    metrics = [m for m in METRICS if any((r.get("metrics") or {}).get(m) is not None for r in rows)]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
    ]
    summary = [
        ("model", config.get("model")),
        ("benchmark", config.get("benchmark")),
        ("judge", _judge_text(config)),
        ("edits", results.get("overall", {}).get("n")),
    ]
    settings = config.get("generation") or {}
    if settings:
        summary.append(("generation", ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None)))
    parts.append("<table>")
    parts += [f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in summary if v is not None]
    parts.append("</table>")
    blocks = {"overall": results.get("overall", {})}
    blocks.update(results.get("by_edit_type", {}))
    parts += ["<h2>Scores</h2>", _aggregate_table(blocks)]
    if grids:
        links = " &middot; ".join(f'<a href="{_esc(path)}">{_esc(name)}</a>' for name, path in grids.items())
        parts += ["<h2>Grids</h2>", f"<p>{links}</p>"]
    parts.append("<h2>Edits</h2>")
    head = ["#", "edit type", "instruction", "source", "edited"]
    head += ["target"] if has_target else []
    head += [PERSPECTIVE_TITLES[p] for p in PERSPECTIVES] + [METRICS[m][0] for m in metrics]
    parts += ["<table>", "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        cells = [
            f"<td>{_esc(row['name'])}</td>",
            f"<td>{_esc(row.get('edit_type', ''))}</td>",
            f"<td>{_esc(row.get('instruction', ''))}</td>",
            _image_cell(row.get("source"), tiny_images),
            _image_cell(row.get("edited"), tiny_images),
        ]
        if has_target:
            cells.append(_image_cell(row.get("target"), tiny_images))
        cells += [_judgment_cell(row.get("judgment"), p) for p in PERSPECTIVES]
        row_metrics = row.get("metrics") or {}
        cells += [f'<td class="num">{_fmt(row_metrics.get(m), METRICS[m][1])}</td>' for m in metrics]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts += ["</table>", "</body></html>", ""]
    return "\n".join(parts)


def write_report(path: str | os.PathLike, results, rows, **kwargs) -> None:
    """Render :func:`render_report` and write it atomically."""
    atomic_write_text(path, render_report(results, rows, **kwargs))
