"""Procedural instruction-editing data with known ground truth, in the RewardEdit20K form.

An offline, deterministic stand-in for RewardEdit20K + Real-Edit, small enough to train a tiny reward-
conditioned editor on a CPU. A scene is a background colour and one or two large shapes (circle, square,
triangle) in six clearly distinct colours at positions of a 3x3 grid; an edit is one of

| edit type | instruction templates (examples) |
|---|---|
| `recolor` | "make the circle red", "turn the circle red", "change the color of the circle to red" |
| `remove` | "remove the square", "delete the square", "take away the square" |
| `add` | "add a red triangle at the top left", "put a red triangle at the top left" |
| `move` | "move the circle to the bottom right" |
| `background` | "change the background to blue", "make the background blue" |

The correct result (`target`) is rendered from the edited scene. In the `train` split a fraction
(`corruption_fraction`, default 0.7) of the edits are deliberately imperfect, each failing one perspective
(and with probability `second_corruption_probability` a second one), so that every low score has an
unambiguous cause:

- instruction following: `wrong_color` (recolor/add/background in another colour), `incomplete` (only a
  half-plane of the edit is applied), `no_edit` (the image is returned unchanged);
- detail preserving: `other_recolor` (another object changes colour), `background_change` (the background
  changes too; recolor/add only), `distractor` (an unrequested small shape appears; not with background
  edits, which change every background pixel);
- generation quality: `noise` (Gaussian, sigma 0.03..0.2), `blur` (Gaussian, sigma 0.7..1.6 px at 32 px),
  `washed_out` (every colour moved 25..50% of the way to mid grey).

The first corruption is drawn from all those applicable to the edit with the weights `CORRUPTION_WEIGHTS`
(`background_change` 8, `washed_out` 2, `no_edit` 0.5, the others 1); a second one from another
perspective.

The `edited` image is the corrupted `content` image (following and preserving corruptions) after the
quality degradation. Scores are computed from the measured ground-truth error, on the 0..5 scale, rounded
to one decimal (`score_edit`): with d(a, b) the per-pixel RGB distance |a - b| / (255 sqrt 3) in [0, 1],
tau = 0.25, and M the pixels the correct edit changes (d(source, target) > 0),

    following  = 5 * mean over M of clip(1 - d(content, target) / tau, 0, 1)          (5 if M is empty)
    preserving = 5 * clip(1 - A / (0.2 * H * W), 0, 1),
                 A = sum outside M of clip(d(content, source) / tau, 0, 1)
    quality    = 5 * clip((PSNR(edited, content) - 12 dB) / 20 dB, 0, 1)                (5 if identical)

so a wrong colour gives following 0, half an edit about 2.5, another object recoloured preserving about 2,
a changed background 0, noise of sigma 0.03 quality about 4.5 and of 0.2 about 0.7, washed-out colours
0.2..2.7 (mean 1.3). A perspective with score 5.0 gets the text "There are no noticeable negative
aspects." (`perfect_text`); otherwise a short RewardEdit-style failure description ("The circle is yellow
instead of red.", "The image is blurry.").
The `test` split holds correct edits only (scores 5, 5, 5). Everything is a deterministic function of
(seed, split, index).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from rewardedit_jax.data import images

PERFECT_TEXT = "There are no noticeable negative aspects."
# The `synthetic_edit` builder's version: a change of what `generate` returns for some index bumps it.
DATASET_VERSION = "1.1.0"
# The builder configs of `synthetic_edit` (its TFDS builder makes one per row), here so that a command can
# check a config name without importing TensorFlow: name -> (image side, train edits, test edits).
BUILDER_CONFIGS = {
    "16px": (16, 20_000, 512),
    "32px": (32, 20_000, 512),
    "64px": (64, 20_000, 512),
    "tiny": (32, 48, 16),
}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle")
# 3x3 grid of positions (row, column), as fractions of the image side.
_GRID = (0.24, 0.5, 0.76)
_ROW_NAMES = ("top", "", "bottom")
_COL_NAMES = ("left", "", "right")
SLOTS: dict[str, tuple[int, int]] = {
    (" ".join(n for n in (_ROW_NAMES[r], _COL_NAMES[c]) if n) or "center"): (r, c)
    for r in range(3)
    for c in range(3)
}
EDIT_TYPES = ("recolor", "remove", "add", "move", "background")
SPLITS = {"train": 0, "test": 1}

FOLLOWING_CORRUPTIONS = ("wrong_color", "incomplete", "no_edit")
PRESERVING_CORRUPTIONS = ("other_recolor", "background_change", "distractor")
QUALITY_CORRUPTIONS = ("noise", "blur", "washed_out")
CORRUPTIONS = {"following": FOLLOWING_CORRUPTIONS, "preserving": PRESERVING_CORRUPTIONS}
CORRUPTIONS["quality"] = QUALITY_CORRUPTIONS
# Relative weights of the corruptions applicable to an edit (1 if not listed). A small model reproduces
# the corruptions that change a whole region the same way (a changed background, faded colours) at about
# their training rate, and the random small ones (another shape recoloured, a distractor, pixel noise)
# hardly at all (docs/demo.md); these two weigh more so that a model trained without rewards
# learns failures that a reward-conditioned one can avoid. An unchanged image (`no_edit`) weighs less: it
# keeps every pixel outside the edit, so a model that learns to skip edits gains preserving for it.
CORRUPTION_WEIGHTS = {"background_change": 8.0, "washed_out": 2.0, "no_edit": 0.5}

TEMPLATES = {
    "recolor": (
        "make the {shape} {color}",
        "turn the {shape} {color}",
        "change the color of the {shape} to {color}",
    ),
    "remove": ("remove the {shape}", "delete the {shape}", "take away the {shape}"),
    "add": ("add a {color} {shape} at the {slot}", "put a {color} {shape} at the {slot}"),
    "move": ("move the {shape} to the {slot}",),
    "background": ("change the background to {color}", "make the background {color}"),
}

TAU = 0.25  # Colour distance at which a pixel counts as fully wrong (palette colours are >= 0.39 apart).
PRESERVING_AREA = 0.2  # Changed fraction of the image (outside the edit) that takes preserving to 0.
PSNR_RANGE = (12.0, 32.0)  # dB mapped to quality 0 and 5.
OBJECT_SIZE = (0.32, 0.38)  # Shape size (bounding side) as a fraction of the image side.
JITTER = 0.03
DISTRACTOR_SIZE = 0.28
NOISE_SIGMA = (0.03, 0.2)
BLUR_SIGMA_AT_32PX = (0.7, 1.6)
WASH = (0.25, 0.5)  # washed_out: share of the way to mid grey; below 0.55 every palette colour snaps back
WASH_GREY = 128.0


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """resolution: image side in pixels; corruption_fraction: imperfect share of `train` edits."""

    resolution: int = 32
    corruption_fraction: float = 0.7
    second_corruption_probability: float = 0.25
    perfect_text: str = PERFECT_TEXT
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    slot: str
    size: float = 0.35
    offset: tuple[float, float] = (0.0, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        r, c = SLOTS[self.slot]
        return _GRID[r] + self.offset[0], _GRID[c] + self.offset[1]


@dataclasses.dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple[Shape, ...]

    def find(self, kind: str) -> Shape:
        return next(s for s in self.shapes if s.kind == kind)

    def replace(self, old: Shape, new: Shape | None) -> Scene:
        shapes = tuple(new if s is old else s for s in self.shapes if new is not None or s is not old)
        return Scene(self.background, shapes)


@dataclasses.dataclass(frozen=True)
class SyntheticExample:
    """One generated edit. `content` is the edited image before the quality degradation."""

    key: str
    instruction: str
    edit_type: str
    source: np.ndarray
    target: np.ndarray
    content: np.ndarray
    edited: np.ndarray
    corruptions: tuple[str, ...]
    reward_scores: np.ndarray
    reward_texts: tuple[str, str, str]

    def as_tfds_example(self) -> dict:
        """The features of the `synthetic_edit` builder (images as PNG bytes)."""
        return {
            "key": self.key,
            "source_image": images.encode_png(self.source),
            "edited_image": images.encode_png(self.edited),
            "target_image": images.encode_png(self.target),
            "instruction": self.instruction,
            "edit_type": self.edit_type,
            "reward_scores": self.reward_scores,
            "reward_texts": list(self.reward_texts),
        }


# ------------------------------------------------------------------------------------------------------
# Rendering.


def _grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
    return coords[:, None], coords[None, :]


def shape_mask(shape: Shape, resolution: int) -> np.ndarray:
    """Boolean (H, W) mask of a shape (pixel centres inside it)."""
    y, x = _grid(resolution)
    cy, cx = shape.center
    half = shape.size / 2
    if shape.kind == "circle":
        return (y - cy) ** 2 + (x - cx) ** 2 <= half**2
    if shape.kind == "square":
        side = half * 0.88  # About the circle's area.
        return (np.abs(y - cy) <= side) & (np.abs(x - cx) <= side)
    if shape.kind == "triangle":  # Upward, apex at the top.
        top, height = cy - half * 1.1, 2.2 * half
        progress = (y - top) / height
        return (progress >= 0) & (progress <= 1) & (np.abs(x - cx) <= progress * half * 1.15)
    raise ValueError(f"unknown shape {shape.kind!r}")


def render(scene: Scene, resolution: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a scene; shapes are painted in order."""
    image = np.empty((resolution, resolution, 3), np.uint8)
    image[:] = COLORS[scene.background]
    for shape in scene.shapes:
        image[shape_mask(shape, resolution)] = COLORS[shape.color]
    return image


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, C) float image, edges replicated."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * image.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(image, pad, mode="edge")
        length = image.shape[axis]
        image = sum(w * np.take(padded, range(i, i + length), axis=axis) for i, w in enumerate(taps))
    return image


# ------------------------------------------------------------------------------------------------------
# Scores.


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = a.astype(np.float32) - b.astype(np.float32)
    return np.sqrt((diff**2).sum(-1)) / (255.0 * math.sqrt(3.0))


def following_score(source: np.ndarray, content: np.ndarray, target: np.ndarray) -> float:
    """5 x the share of the correct edit's changed pixels that `content` gets right (soft, tau)."""
    edit_region = _distance(source, target) > 0
    if not edit_region.any():
        return 5.0
    credit = np.clip(1.0 - _distance(content, target)[edit_region] / TAU, 0.0, 1.0)
    return float(5.0 * credit.mean())


def preserving_score(source: np.ndarray, content: np.ndarray, target: np.ndarray) -> float:
    """5 x (1 - changed area outside the edit / (0.2 x image area)), clipped to 0..5."""
    outside = _distance(source, target) == 0
    changed = np.clip(_distance(content, source)[outside] / TAU, 0.0, 1.0).sum()
    return float(5.0 * np.clip(1.0 - changed / (PRESERVING_AREA * outside.size), 0.0, 1.0))


def quality_score(edited: np.ndarray, content: np.ndarray) -> float:
    """5 x (PSNR(edited, content) - 12 dB) / 20 dB, clipped to 0..5; 5 when identical."""
    mse = np.mean((edited.astype(np.float64) - content.astype(np.float64)) ** 2) / 255.0**2
    if mse == 0:
        return 5.0
    psnr = -10.0 * math.log10(mse)
    low, high = PSNR_RANGE
    return float(5.0 * np.clip((psnr - low) / (high - low), 0.0, 1.0))


def score_edit(source: np.ndarray, content: np.ndarray, target: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """float32 (3,) scores (following, preserving, quality), each rounded to one decimal."""
    scores = (
        following_score(source, content, target),
        preserving_score(source, content, target),
        quality_score(edited, content),
    )
    return np.round(np.asarray(scores, np.float64), 1).astype(np.float32)


# ------------------------------------------------------------------------------------------------------
# Scene and edit sampling.


def _far_apart(a: str, b: str) -> bool:
    (ra, ca), (rb, cb) = SLOTS[a], SLOTS[b]
    return max(abs(ra - rb), abs(ca - cb)) >= 2


def _free_slots(occupied: Sequence[str]) -> list[str]:
    return [s for s in SLOTS if all(_far_apart(s, o) for o in occupied)]


def _choice(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _corruption_choice(rng: np.random.Generator, options: Sequence, kinds: Sequence[str] | None = None):
    """One of ``options``, drawn with the `CORRUPTION_WEIGHTS` of ``kinds`` (default: the options)."""
    kinds = options if kinds is None else kinds
    weights = np.asarray([CORRUPTION_WEIGHTS.get(k, 1.0) for k in kinds], np.float64)
    return options[int(np.searchsorted(np.cumsum(weights), rng.random() * weights.sum(), side="right"))]


def _other_colors(*excluded: str) -> list[str]:
    return [c for c in COLORS if c not in excluded]


def sample_scene(rng: np.random.Generator) -> Scene:
    background = _choice(rng, list(COLORS))
    count = 1 + int(rng.integers(2))
    kinds = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:count]]
    slot_sets = (
        [(s,) for s in SLOTS] if count == 1 else [(a, b) for a in SLOTS for b in SLOTS if _far_apart(a, b)]
    )
    shapes = []
    for kind, slot in zip(kinds, _choice(rng, slot_sets)):
        size = float(rng.uniform(*OBJECT_SIZE))
        offset = tuple(float(v) for v in rng.uniform(-JITTER, JITTER, size=2))
        shapes.append(Shape(kind, _choice(rng, _other_colors(background)), slot, size, offset))
    return Scene(background, tuple(shapes))


@dataclasses.dataclass(frozen=True)
class Edit:
    """An edit of a scene: the instruction, the correct result, and what the texts need to know."""

    edit_type: str
    instruction: str
    target: Scene
    subject: Shape | None  # The shape edited (None for background edits), as in the target scene.
    color: str | None  # The requested colour (recolor, add, background).


def sample_edit(scene: Scene, rng: np.random.Generator) -> Edit:
    kinds = {s.kind for s in scene.shapes}
    add_slots = _free_slots([s.slot for s in scene.shapes])
    applicable = ["recolor", "remove", "move", "background"]
    if add_slots and len(kinds) < len(SHAPES):
        applicable.append("add")
    edit_type = _choice(rng, applicable)
    template = _choice(rng, TEMPLATES[edit_type])
    if edit_type == "background":
        color = _choice(rng, _other_colors(scene.background, *(s.color for s in scene.shapes)))
        target = Scene(color, scene.shapes)
        return Edit(edit_type, template.format(color=color), target, None, color)
    if edit_type == "add":
        kind = _choice(rng, [k for k in SHAPES if k not in kinds])
        color = _choice(rng, _other_colors(scene.background))
        added = Shape(kind, color, _choice(rng, add_slots))
        target = Scene(scene.background, (*scene.shapes, added))
        return Edit(
            edit_type, template.format(color=color, shape=kind, slot=added.slot), target, added, color
        )
    shape = _choice(rng, scene.shapes)
    if edit_type == "recolor":
        color = _choice(rng, _other_colors(shape.color, scene.background))
        new = dataclasses.replace(shape, color=color)
        return Edit(
            edit_type, template.format(shape=shape.kind, color=color), scene.replace(shape, new), new, color
        )
    if edit_type == "remove":
        return Edit(edit_type, template.format(shape=shape.kind), scene.replace(shape, None), shape, None)
    others = [s.slot for s in scene.shapes if s is not shape]
    slots = [s for s in _free_slots(others) if s != shape.slot]
    new = dataclasses.replace(shape, slot=_choice(rng, slots), offset=(0.0, 0.0))
    return Edit(
        edit_type, template.format(shape=shape.kind, slot=new.slot), scene.replace(shape, new), new, None
    )


# ------------------------------------------------------------------------------------------------------
# Corruptions.


def _applicable(perspective: str, edit: Edit, source: Scene) -> list[str]:
    if perspective == "following":
        wrong_color = ["wrong_color"] if edit.edit_type in ("recolor", "add", "background") else []
        return [*wrong_color, "incomplete", "no_edit"]
    if perspective == "preserving":
        options = []
        if [s for s in edit.target.shapes if not _is_subject(s, edit)]:
            options.append("other_recolor")
        if edit.edit_type in ("recolor", "add"):
            options.append("background_change")
        # A background edit changes every background pixel, so a distractor would land inside the edit.
        if edit.edit_type != "background" and _free_slots(
            [s.slot for s in (*source.shapes, *edit.target.shapes)]
        ):
            options.append("distractor")
        return options
    return list(QUALITY_CORRUPTIONS)


def _is_subject(shape: Shape, edit: Edit) -> bool:
    return edit.subject is not None and shape.kind == edit.subject.kind


def sample_corruptions(rng: np.random.Generator, edit: Edit, source: Scene, config: SyntheticConfig) -> tuple:
    """Corruption names, at most one per perspective; `incomplete` is never combined with a preserving one.

    The first is drawn from every corruption applicable to the edit, with `CORRUPTION_WEIGHTS`; a second
    one (probability `second_corruption_probability`) from another perspective, drawn uniformly, and then
    from its corruptions with the weights.
    """
    perspectives = [p for p in CORRUPTIONS if _applicable(p, edit, source)]
    pairs = [(p, kind) for p in perspectives for kind in _applicable(p, edit, source)]
    chosen = [_corruption_choice(rng, pairs, [kind for _, kind in pairs])]
    first = chosen[0][0]
    if rng.random() < config.second_corruption_probability:
        second = _choice(rng, [p for p in perspectives if p != first])
        kind = _corruption_choice(rng, _applicable(second, edit, source))
        pair = {first: chosen[0][1], second: kind}
        if not ("preserving" in pair and pair.get("following") == "incomplete"):
            chosen.append((second, kind))
    order = list(CORRUPTIONS)
    return tuple(kind for _, kind in sorted(chosen, key=lambda pk: order.index(pk[0])))


def _apply_following(kind: str, rng, edit: Edit, source: Scene, facts: dict) -> Scene | None:
    if kind == "no_edit":
        return source
    if kind == "incomplete":
        return None
    # wrong_color
    target = edit.target
    if edit.edit_type == "background":
        wrong = _choice(rng, _other_colors(edit.color, source.background, *(s.color for s in target.shapes)))
        facts["wrong_color"] = wrong
        return Scene(wrong, target.shapes)
    wrong = _choice(
        rng,
        _other_colors(
            edit.color, source.background, *(s.color for s in source.shapes if s.kind == edit.subject.kind)
        ),
    )
    facts["wrong_color"] = wrong
    subject = target.find(edit.subject.kind)
    return target.replace(subject, dataclasses.replace(subject, color=wrong))


def _apply_preserving(kind: str, rng, edit: Edit, source: Scene, scene: Scene, facts: dict) -> Scene:
    if kind == "other_recolor":
        other = _choice(rng, [s for s in scene.shapes if not _is_subject(s, edit)])
        color = _choice(rng, _other_colors(other.color, scene.background))
        facts["other"] = (other.kind, other.color, color)
        return scene.replace(other, dataclasses.replace(other, color=color))
    if kind == "background_change":
        color = _choice(rng, _other_colors(scene.background, *(s.color for s in scene.shapes)))
        facts["background"] = (scene.background, color)
        return Scene(color, scene.shapes)
    # distractor: a small shape at a slot free in both the source and the result.
    slot = _choice(rng, _free_slots([s.slot for s in (*source.shapes, *scene.shapes)]))
    shape = Shape(_choice(rng, SHAPES), _choice(rng, _other_colors(scene.background)), slot, DISTRACTOR_SIZE)
    facts["distractor"] = (shape.color, shape.kind)
    return Scene(scene.background, (*scene.shapes, shape))


def _half_plane(rng, edit_region: np.ndarray) -> np.ndarray:
    """A half-plane mask holding between about 30% and 70% of the edit region."""
    axis = int(rng.integers(2))
    coords = np.nonzero(edit_region)[axis]
    cut = np.quantile(coords, rng.uniform(0.3, 0.7))
    index = np.indices(edit_region.shape)[axis]
    keep = index <= cut
    return keep if rng.random() < 0.5 else ~keep


def _degrade(kind: str, rng, content: np.ndarray, resolution: int, facts: dict) -> np.ndarray:
    image = content.astype(np.float32) / 255.0
    if kind == "noise":
        sigma = float(rng.uniform(*NOISE_SIGMA))
        facts["noise_sigma"] = sigma
        image = image + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    elif kind == "washed_out":
        amount = float(rng.uniform(*WASH))
        facts["wash"] = amount
        image = image + amount * (WASH_GREY / 255.0 - image)
    else:
        sigma = float(rng.uniform(*BLUR_SIGMA_AT_32PX)) * resolution / 32
        facts["blur_sigma"] = sigma
        image = gaussian_blur(image, sigma)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------
# Texts.


def _following_text(corruptions: Sequence[str], edit: Edit, facts: dict) -> str:
    subject = edit.subject.kind if edit.subject is not None else None
    if "no_edit" in corruptions:
        return "The image was not edited; the instruction was ignored."
    if "wrong_color" in corruptions:
        wrong = facts["wrong_color"]
        if edit.edit_type == "background":
            return f"The background is {wrong} instead of {edit.color}."
        if edit.edit_type == "add":
            return f"The added {subject} is {wrong} instead of {edit.color}."
        return f"The {subject} is {wrong} instead of {edit.color}."
    if "incomplete" in corruptions:
        if edit.edit_type == "recolor":
            return f"Only part of the {subject} was turned {edit.color}."
        if edit.edit_type == "remove":
            return f"The {subject} was only partly removed."
        if edit.edit_type == "add":
            return f"The {edit.color} {subject} was only partly added."
        if edit.edit_type == "move":
            return f"The {subject} was only partly moved to the {edit.subject.slot}."
        return f"Only part of the background was changed to {edit.color}."
    return "The edit does not fully follow the instruction."


def _preserving_text(facts: dict) -> str:
    if "other" in facts:
        kind, old, new = facts["other"]
        return f"The {kind} changed from {old} to {new}, which was not requested."
    if "background" in facts:
        old, new = facts["background"]
        return f"The background changed from {old} to {new}, which was not requested."
    if "distractor" in facts:
        color, kind = facts["distractor"]
        return f"An unrequested {color} {kind} appeared."
    return "Parts of the image that should stay the same were changed."


def _quality_text(corruptions: Sequence[str], score: float) -> str:
    degree = "slightly " if score >= 4.0 else ("very " if score < 2.0 else "")
    if "noise" in corruptions:
        return f"The image is {degree}noisy and grainy."
    if "blur" in corruptions:
        return f"The image is {degree}blurry."
    if "washed_out" in corruptions:
        return f"The colors are {degree}washed out."
    return "The image has visible artifacts."


# ------------------------------------------------------------------------------------------------------
# Generation.


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index]))


def generate(config: SyntheticConfig, split: str, index: int) -> SyntheticExample:
    """The example `index` of `split`, a deterministic function of (config, split, index)."""
    rng = example_rng(config.seed, split, index)
    resolution = config.resolution
    source_scene = sample_scene(rng)
    edit = sample_edit(source_scene, rng)
    source = render(source_scene, resolution)
    target = render(edit.target, resolution)

    corruptions: tuple[str, ...] = ()
    if split == "train" and rng.random() < config.corruption_fraction:
        corruptions = sample_corruptions(rng, edit, source_scene, config)
    facts: dict = {}
    scene = edit.target
    following = [c for c in corruptions if c in FOLLOWING_CORRUPTIONS]
    if following:
        scene = _apply_following(following[0], rng, edit, source_scene, facts)
    for kind in (c for c in corruptions if c in PRESERVING_CORRUPTIONS):
        scene = _apply_preserving(kind, rng, edit, source_scene, scene, facts)
    if (
        scene is None
    ):  # Incomplete edit: the correct result on a half-plane of the edit, the source elsewhere.
        edit_region = _distance(source, target) > 0
        keep = _half_plane(rng, edit_region)
        content = np.where(keep[..., None], target, source)
    else:
        content = render(scene, resolution)
    edited = content
    for kind in (c for c in corruptions if c in QUALITY_CORRUPTIONS):
        edited = _degrade(kind, rng, content, resolution, facts)

    scores = score_edit(source, content, target, edited)
    texts = (
        config.perfect_text if scores[0] >= 5.0 else _following_text(corruptions, edit, facts),
        config.perfect_text if scores[1] >= 5.0 else _preserving_text(facts),
        config.perfect_text if scores[2] >= 5.0 else _quality_text(corruptions, float(scores[2])),
    )
    return SyntheticExample(
        key=f"{split}_{index:07d}",
        instruction=edit.instruction,
        edit_type=edit.edit_type,
        source=source,
        target=target,
        content=content,
        edited=edited,
        corruptions=corruptions,
        reward_scores=scores,
        reward_texts=texts,
    )
