"""The oracle judge: Real-Edit style judgments of `synthetic_edit` edits, computed from the ground truth.

The offline stand-in for the GPT-4o judge of the Real-Edit protocol
(docs/sources.md, "Real-Edit evaluation protocol"): the same three
perspectives, the same answer (``{"answer": "yes" | "no", "score": 0..5}``) and the same aggregates, so an
evaluation on the synthetic benchmark reads like the real one. It reuses the measurements that label the
synthetic data (:mod:`rewardedit_jax.data.synthetic`, docs/data.md), with the correct edit (``target``) as
the reference:

    content    = snap_to_palette(edited): each pixel's nearest palette colour (synthetic.COLORS), lone
                 outlier pixels replaced by their neighbours' most common colour
    following  = synthetic.following_score(source, content, target)    the edit region M matches the target
    preserving = synthetic.preserving_score(source, content, target)   nothing outside M changed
    quality    = synthetic.quality_score(edited, content)              PSNR of edited against the clean image

each rounded to one decimal (``synthetic.score_edit``), and ``answer = "yes"`` iff ``score >= 4.0``
(:data:`YES_THRESHOLD`).

Why the snap: the data generator knows ``content`` (the edit before noise or blur); a model's output does
not come with one. Synthetic scenes are flat regions of the six palette colours (every rendered scene is a
fixed point of the snap), so the snapped image is the clean image an edit most plausibly meant. Following
and preserving are then judged on what the edit *did*, barely affected by noise, and quality measures the
distance from that clean image: noise, blur, colour casts and other off-palette artifacts all lower it.

Sanity (tests/test_oracle.py): the ground-truth target scores 5 / yes on all three; the untouched source
scores 0 on following (palette colours are at least 0.39 apart, above tau = 0.25); a target with Gaussian
noise of sigma 0.1 keeps following and preserving at 5 and drops to quality 2.0-2.6 ("no"), sigma 0.05 to
3.5-3.9. On the labelled `train` edits (32 px) the oracle reproduces the stored reward scores to the
decimal for about 92% of the edits per perspective and within 0.3 for 98% (mean absolute difference 0.02);
the rest are strongly blurred edges that snap to a third colour, or heavy noise (sigma near 0.2, where
about 2% of the pixels snap wrongly).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rewardedit_jax.data import synthetic

PERSPECTIVES = ("following", "preserving", "quality")
YES_THRESHOLD = 4.0  # a perspective is answered "yes" iff its score (0..5, one decimal) is at least this
PALETTE = np.asarray(list(synthetic.COLORS.values()), np.float32)  # (6, 3)
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def snap_to_palette(image: np.ndarray) -> np.ndarray:
    """The clean image an edit meant: each pixel's nearest palette colour, isolated outliers removed.

    Every pixel of the RGB uint8 (H, W, 3) image gets the nearest palette colour (Euclidean RGB); a pixel
    whose colour none of its 8 neighbours shares (a noise outlier: rendered shapes have no lone pixels) then
    takes its neighbours' most common colour. A rendered synthetic image is returned unchanged.
    """
    pixels = np.asarray(image, np.float32)
    labels = ((pixels[..., None, :] - PALETTE) ** 2).sum(-1).argmin(-1)  # (H, W) palette indices
    height, width = labels.shape
    padded = np.pad(labels, 1, constant_values=-1)
    neighbours = np.stack(
        [padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] for dy, dx in _NEIGHBOURS]
    )  # (8, H, W); -1 outside the image
    counts = np.stack([(neighbours == k).sum(0) for k in range(len(PALETTE))], -1)  # (H, W, 6)
    isolated = np.take_along_axis(counts, labels[..., None], -1)[..., 0] == 0
    labels = np.where(isolated, counts.argmax(-1), labels)
    return PALETTE[labels].astype(np.uint8)


def _checked(name: str, image: Any) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"{name} must be an RGB uint8 (H, W, 3) array; got {array.dtype} {array.shape}")
    return array


def judge_edit(
    source: np.ndarray, edited: np.ndarray, target: np.ndarray, meta: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Judge one synthetic edit: perspective -> ``{"answer": "yes" | "no", "score": float 0..5}``.

    ``source``, ``edited`` and ``target`` are RGB uint8 (H, W, 3) arrays of one size (the dataset's native
    resolution). ``meta`` (instruction, edit type, ...) is accepted for the judge interface and not needed:
    the target says everything about the correct edit.
    """
    del meta
    source, edited, target = (
        _checked(n, x) for n, x in (("source", source), ("edited", edited), ("target", target))
    )
    if not source.shape == edited.shape == target.shape:
        raise ValueError(
            f"source, edited and target must have one size; got {source.shape}, {edited.shape}, "
            f"{target.shape}"
        )
    content = snap_to_palette(edited)
    scores = synthetic.score_edit(source, content, target, edited)
    return {
        perspective: {"answer": "yes" if score >= YES_THRESHOLD else "no", "score": round(float(score), 1)}
        for perspective, score in zip(PERSPECTIVES, scores)
    }
