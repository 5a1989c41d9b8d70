"""``python -m rewardedit_jax.app``: an interactive editing app (Gradio), the reward condition as controls.

    python -m rewardedit_jax.app [--model PATH_OR_HUB_ID] [--host 127.0.0.1] [--port 7860]

``--model`` is anything ``python -m rewardedit_jax.edit --model`` takes (diffusers folder, Flax model
directory, training workdir, Hub id), resolved by the same code. Without it the app serves the model ``make
demo`` exported (``$DEMO_OUT/export_reward``, ``DEMO_OUT`` default ``demo_out``) with the demo's test
edits as examples and its sampling settings as defaults. docs/app.md describes the page.

The app works at the model's recorded resolution (``edit``'s rule, :func:`rewardedit_jax.edit.fit_settings`)
and fits every image (centre crop + LANCZOS, as ``edit``) to one of a few sizes: square, 4:3 and 3:4 at that
resolution (``--aspects``). At start it checks that they fit in memory and compiles the sampler for each
size at batch 1 (an edit) and batch 5 (a sweep) with the default settings, so a click is a sampler call;
other steps or guidance on/off compile once more. Requests are queued and run one at a time. An upload
that is not an image, or larger than ``--max-side`` pixels or ``--max-file-mb``, gets a message in the
page's status box, and the server goes on serving.

:func:`load_app` builds the app's state (:class:`EditApp`) for a model; :meth:`EditApp.edit` is what the
Edit button runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rewardedit_jax import edit as edit_cli
from rewardedit_jax.cli import EXIT_USER_ERROR, UsageError, add_sampling_arguments
from rewardedit_jax.demo import BEST_FEEDBACK as DEMO_FEEDBACK
from rewardedit_jax.demo import EXPORT_DIR as DEMO_EXPORT

AppError = UsageError
PERSPECTIVES = ("following", "preserving", "quality")
# A sweep: reward levels 1..5 of one perspective (the others at their sliders' values) or of all three.
SWEEP_LEVELS = (1.0, 2.0, 3.0, 4.0, 5.0)
SWEEPS = ("all three", *PERSPECTIVES)
DEFAULT_ASPECTS = "1:1,4:3,3:4"
DEFAULT_MAX_SIDE = 4096
DEFAULT_MAX_FILE_MB = 20
DEMO_EXAMPLES = 8
# Images in the page are enlarged (nearest neighbour) to about this long side: a 16 px edit is unreadable.
DISPLAY_SIDE = 256


def _log(message: str) -> None:
    print(f"app: {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Example:
    image: str  # an image file
    instruction: str


def parse_aspects(text: str) -> list[tuple[int, int]]:
    """``"1:1,4:3"`` -> [(1, 1), (4, 3)] (width:height)."""
    aspects = []
    for part in text.split(","):
        try:
            w, h = (int(v) for v in part.split(":"))
        except ValueError:
            raise AppError(
                f"--aspects must be width:height pairs like {DEFAULT_ASPECTS}; got {text!r}"
            ) from None
        if w < 1 or h < 1:
            raise AppError(f"--aspects must be positive width:height pairs; got {text!r}")
        aspects.append((w, h))
    return list(dict.fromkeys(aspects))


def bucket_sizes(resolution: int, multiple: int, aspects: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (width, height) images are fitted to: long side ``resolution``, the short one the aspect's,
    rounded to ``multiple`` (at least one ``multiple``)."""
    sizes = []
    for w, h in aspects:
        short = max(multiple, round(resolution * min(w, h) / max(w, h) / multiple) * multiple)
        sizes.append((resolution, short) if w >= h else (short, resolution))
    return list(dict.fromkeys(sizes))


class EditApp:
    """What the page serves: a loaded model, its jitted sampler, the sizes images are fitted to, and the
    checks on uploads. :meth:`edit` and :meth:`sweep` are the buttons' calls."""

    def __init__(
        self,
        pipeline,
        sampler,
        *,
        name: str,
        fit: tuple[int, int, int | None],
        defaults: argparse.Namespace | None = None,
        examples: Sequence[Example] = (),
        log: Callable[[str], None] = _log,
    ):
        """``fit``: (resolution, side multiple, recorded resolution or None) of
        :func:`rewardedit_jax.edit.fit_settings`; ``defaults``: :func:`build_parser`'s arguments (the
        controls' start values, ``--aspects``, ``--max-side``, ``--max-file-mb``, ``--attention``)."""
        self.pipeline, self.sampler, self.name, self.log = pipeline, sampler, name, log
        self.resolution, self.multiple, self.recorded = fit
        self.defaults = d = defaults or build_parser().parse_args([])
        self.sizes = bucket_sizes(self.resolution, self.multiple, parse_aspects(d.aspects))
        self.examples = list(examples)
        self.max_side, self.max_file_bytes = d.max_side, int(d.max_file_mb * 2**20)
        self.attention = d.attention

    @property
    def has_reward(self) -> bool:
        return bool(self.sampler.has_reward)

    # ------------------------------------------------------------------ inputs

    def fitted_size(self, width: int, height: int) -> tuple[int, int]:
        """The size of :attr:`sizes` whose aspect ratio is closest to ``width`` x ``height``'s."""
        aspect = math.log(width / height)
        return min(self.sizes, key=lambda s: abs(math.log(s[0] / s[1]) - aspect))

    def load_image(self, path: str | os.PathLike) -> np.ndarray:
        """An uploaded file as the fitted RGB source (H, W, 3) uint8; a file that is not an image or is
        over the limits is a one-line :class:`AppError` (the size is read from the header, before
        decoding)."""
        from PIL import Image, ImageOps, UnidentifiedImageError

        name = Path(path).name
        size = os.path.getsize(path)
        if size > self.max_file_bytes:
            raise AppError(
                f"{name} is {size / 2**20:.1f} MB; the limit is {self.max_file_bytes / 2**20:g} MB per image"
            )
        try:
            with Image.open(path) as opened:
                if max(opened.size) > self.max_side:
                    raise AppError(
                        f"{name} is {opened.width}x{opened.height} pixels; the limit is {self.max_side} "
                        "pixels per side"
                    )
                image = ImageOps.exif_transpose(opened).convert("RGB")
        except (UnidentifiedImageError, Image.DecompressionBombError):
            raise AppError(f"{name} is not an image this app can read (PNG, JPEG, WebP, ...)") from None
        except OSError as e:
            raise AppError(f"{name}: cannot read the image ({' '.join(str(e).split())[:200]})") from None
        size = self.fitted_size(image.width, image.height)
        if size != image.size:
            image = ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)
        return np.asarray(image, dtype=np.uint8)

    def _run(
        self,
        image: np.ndarray,
        instruction: str,
        rows: list[tuple[float, float, float]] | None,
        *,
        feedback: str | None = None,
        steps: int | None = None,
        seed: int | None = None,
        text_guidance: float | None = None,
        image_guidance: float | None = None,
        reward_guidance: float | None = None,
    ) -> list[np.ndarray]:
        """One sampler call: ``image`` edited once per reward row (once for a stock model). Unset settings
        are the app's defaults (its command line's, as ``edit``'s)."""
        d = self.defaults
        steps, seed = (
            _integer(d.steps if steps is None else steps, "steps"),
            _integer(d.seed if seed is None else seed, "seed"),
        )
        text_guidance = float(d.text_guidance if text_guidance is None else text_guidance)
        image_guidance = float(d.image_guidance if image_guidance is None else image_guidance)
        if not 1 <= steps <= 1000:
            raise AppError(f"steps must be in 1..1000; got {steps}")
        if not 0 <= seed < 2**32:
            raise AppError(f"seed must be in 0..{2**32 - 1}; got {seed}")
        if not (math.isfinite(text_guidance) and math.isfinite(image_guidance)):
            raise AppError(f"the guidance scales must be numbers; got {text_guidance}, {image_guidance}")
        condition = {}
        if not self.has_reward:
            if rows is not None or feedback is not None or reward_guidance is not None:
                raise AppError(f"{self.name} is not a reward model; it takes no reward condition")
        else:
            default = edit_cli.parse_scores(d.reward) if d.reward else (5.0, 5.0, 5.0)
            scores = np.asarray(rows if rows is not None else [default], np.float64)
            if not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 5:
                raise AppError(f"reward scores must be in 0..5; got {scores.tolist()}")
            condition = {"reward_scores": scores, "feedback": d.feedback if feedback is None else feedback}
            if reward_guidance is not None:
                condition.update(
                    reward_guidance=float(reward_guidance),
                    low_reward_scores=edit_cli.parse_scores(d.low_reward, "--low-reward"),
                    low_feedback=d.low_feedback,
                )
        batch = 1 if rows is None else len(rows)
        try:
            result = self.sampler(
                np.broadcast_to(image, (batch, *image.shape)),
                [instruction] * batch,
                num_steps=steps,
                seed=seed,
                text_guidance=text_guidance,
                image_guidance=image_guidance,
                **condition,
            )
        except Exception as e:
            if edit_cli.out_of_memory(e):
                raise edit_cli.memory_error(e, f"editing at {image.shape[1]}x{image.shape[0]}") from None
            raise
        return list(result.images)

    # ------------------------------------------------------------------ the buttons

    def edit(
        self, image: np.ndarray, instruction: str, *, reward: Sequence[float] | None = None, **settings
    ) -> np.ndarray:
        """One edit of the fitted ``image`` (:meth:`load_image`): the (H, W, 3) uint8 result.

        ``reward`` (three scores, default ``--reward``'s or 5,5,5) and ``feedback`` are a reward model's
        condition; ``settings``: ``feedback``, ``steps``, ``seed``, ``text_guidance``, ``image_guidance``,
        ``reward_guidance`` (unset: the app's defaults)."""
        return self._run(image, instruction, None if reward is None else [tuple(reward)], **settings)[0]

    def sweep_scores(self, which: str, reward: Sequence[float]) -> list[tuple[float, float, float]]:
        """The scores of a sweep: ``which`` (``all three`` or a perspective) at levels 1..5, the others at
        ``reward``'s."""
        if which not in SWEEPS:
            raise AppError(f"sweep must be one of {', '.join(SWEEPS)}; got {which!r}")
        rows = []
        for level in SWEEP_LEVELS:
            scores = [float(v) for v in reward]
            for i, perspective in enumerate(PERSPECTIVES):
                if which in ("all three", perspective):
                    scores[i] = level
            rows.append((scores[0], scores[1], scores[2]))
        return rows

    def sweep(
        self, image: np.ndarray, instruction: str, which: str = "all three", *, reward=None, **settings
    ) -> list[tuple[np.ndarray, str]]:
        """The same edit and seed at reward levels 1..5 (:meth:`sweep_scores`) in one sampler call:
        [(image, caption)]. ``settings`` as :meth:`edit`'s."""
        if not self.has_reward:
            raise AppError(f"{self.name} is not a reward model; there is no reward condition to sweep")
        rows = self.sweep_scores(which, reward if reward is not None else (5.0, 5.0, 5.0))
        images = self._run(image, instruction, rows, **settings)
        return [(edited, "F {:g} P {:g} Q {:g}".format(*scores)) for edited, scores in zip(images, rows)]

    # ------------------------------------------------------------------ start

    def check_memory(self) -> None:
        """Refuse sizes the device cannot hold (``edit``'s estimate; one line saying what would fit)."""
        d = self.defaults
        batch = len(SWEEP_LEVELS) if self.has_reward else 1
        edit_cli.check_memory(
            self.pipeline,
            {(h, w): batch for w, h in self.sizes},
            branches=edit_cli.guidance_branches(d.text_guidance, d.image_guidance, d.reward_guidance),
            attention=self.attention,
            multiple=self.multiple,
            recorded=self.recorded,
        )

    def warm_up(self) -> None:
        """Compile the sampler for every size at batch 1 and (reward models) the sweep's batch, with the
        default settings: afterwards a click runs the compiled sampler."""
        d = self.defaults
        plans = [
            (size, sweep) for size in self.sizes for sweep in ((False, True) if self.has_reward else (False,))
        ]
        start = time.perf_counter()
        for i, ((w, h), sweep) in enumerate(plans, 1):
            self.log(f"warm-up {i}/{len(plans)}: {w}x{h}, {'a sweep' if sweep else 'an edit'}")
            image = np.zeros((h, w, 3), np.uint8)
            reward = edit_cli.parse_scores(d.reward) if d.reward else None
            if sweep:
                self.sweep(image, "warm-up", reward=reward, reward_guidance=d.reward_guidance)
            else:
                self.edit(image, "warm-up", reward=reward, reward_guidance=d.reward_guidance)
        self.log(
            f"warm-up done: {self.sampler.compile_count} compilations in {time.perf_counter() - start:.1f} s"
        )


def _integer(value, what: str) -> int:
    """``value`` (a number a form sent) as an int; a fraction or text is a one-line error."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AppError(f"{what} must be a whole number; got {value!r}") from None
    if not number.is_integer():
        raise AppError(f"{what} must be a whole number; got {value!r}")
    return int(number)


# ---------------------------------------------------------------------------------------- the model


def demo_out() -> Path:
    """Where ``make demo`` writes (``$DEMO_OUT``, default ``demo_out`` in the current folder)."""
    return Path(os.environ.get("DEMO_OUT") or "demo_out").absolute()


def demo_examples(out: Path, folder: Path, count: int = DEMO_EXAMPLES, log=_log) -> list[Example]:
    """The first ``count`` test edits of the demo's dataset, their sources written to ``folder`` as PNGs
    (none, with a line saying why, when the dataset cannot be read)."""
    from rewardedit_jax.io import read_json

    try:
        settings = read_json(out / "results.json").get("settings", {})
        from rewardedit_jax.data.pipeline import load_data_source

        source, _ = load_data_source(
            f"synthetic_edit/{settings.get('data_config', '16px')}", "test", out / "tfds"
        )
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        examples = []
        for i in range(min(count, len(source))):
            record = source[i]
            image, instruction = record["source_image"], record["instruction"]
            path = folder / f"test_{i:02d}.png"
            if isinstance(image, bytes):
                path.write_bytes(image)
            else:
                Image.fromarray(np.asarray(image)).save(path)
            text = instruction.decode() if isinstance(instruction, bytes) else str(instruction)
            examples.append(Example(str(path), text))
        return examples
    except Exception as e:  # the app still serves the model without examples
        log(f"no examples: the demo's test set could not be read ({' '.join(str(e).split())[:200]})")
        return []


def demo_defaults(out: Path, args: argparse.Namespace, argv: Sequence[str]) -> None:
    """The demo's sampling settings (results.json) as the defaults the command line leaves unset."""
    from rewardedit_jax.io import read_json

    try:
        settings = read_json(out / "results.json").get("settings", {})
    except Exception:
        return
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    for flag, key in (
        ("--steps", "sample_steps"),
        ("--text-guidance", "text_guidance"),
        ("--image-guidance", "image_guidance"),
    ):
        attr = flag[2:].replace("-", "_")
        if flag not in given and key in settings:
            setattr(args, attr, type(getattr(args, attr))(settings[key]))
    if "--feedback" not in given:
        args.feedback = DEMO_FEEDBACK


def load_app(
    model: str | None = None,
    *,
    args: argparse.Namespace | None = None,
    argv: Sequence[str] = (),
    examples_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = _log,
) -> EditApp:
    """The app's state for ``model`` (``None``: the demo's exported model, with its test edits as examples
    written to ``examples_dir``), loaded and compiled with ``args`` (:func:`build_parser`'s; default: its
    defaults). Raises :class:`AppError` with one line when there is no model or it cannot be served."""
    from rewardedit_jax import parallel

    args = args or build_parser().parse_args(list(argv))
    examples: list[Example] = []
    model = model if model is not None else args.model
    if model is None:
        out = demo_out()
        if not (out / DEMO_EXPORT).is_dir():
            raise AppError(
                f"no model to serve: run `make demo` (it trains one into {out / DEMO_EXPORT}) or pass "
                "--model PATH_OR_HUB_ID"
            )
        model = str(out / DEMO_EXPORT)
        demo_defaults(out, args, argv)
        folder = Path(examples_dir) if examples_dir else Path(tempfile.mkdtemp(prefix="rewardedit-app-"))
        examples = demo_examples(out, folder, log=log)
    parse_aspects(args.aspects)
    if args.max_side < 1 or args.max_file_mb <= 0:
        raise AppError(
            f"--max-side and --max-file-mb must be positive; got {args.max_side}, {args.max_file_mb}"
        )
    for flag, value in (("--steps", args.steps), ("--seed", args.seed)):
        if value < (1 if flag == "--steps" else 0):
            raise AppError(f"{flag} must be {'positive' if flag == '--steps' else 'at least 0'}; got {value}")
    if args.reward is not None:
        edit_cli.parse_scores(args.reward)
    hub_id = edit_cli.check_model(model)
    folder = edit_cli.model_folder(model, hub_id, log=log)
    resolution, multiple, recorded = edit_cli.fit_settings(folder, args.resolution)
    log(f"resolution {resolution}" + (" (recorded by the model)" if recorded == resolution else ""))
    pipeline = edit_cli.load(model, folder, args.dtype, log=log)
    if not pipeline.unet.has_reward and (args.reward or args.feedback or args.reward_guidance is not None):
        raise AppError(
            f"{model} is not a reward model; --reward, --feedback and --reward-guidance do not apply"
        )
    sampler = edit_cli.make_sampler(
        model, pipeline, args.scheduler, args.dtype, args.attention, parallel.local_mesh(), log=log
    )
    return EditApp(
        pipeline,
        sampler,
        name=model,
        fit=(resolution, multiple, recorded),
        defaults=args,
        examples=examples,
        log=log,
    )


# ---------------------------------------------------------------------------------------- the page


def display(image: np.ndarray | None) -> np.ndarray | None:
    """``image`` enlarged by a whole factor (nearest neighbour) to about :data:`DISPLAY_SIDE`."""
    if image is None:
        return None
    factor = max(1, DISPLAY_SIDE // max(image.shape[:2]))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1) if factor > 1 else image


def build_page(app: EditApp):
    """The Gradio Blocks of ``app``."""
    import gradio as gr

    d = app.defaults
    reward = edit_cli.parse_scores(d.reward) if d.reward else (5.0, 5.0, 5.0)
    kind = "reward-conditioned" if app.has_reward else "stock (no reward condition)"
    sizes = ", ".join(f"{w}x{h}" for w, h in app.sizes)

    def on_upload(path):
        if not path:
            return None, None, ""
        try:
            image = app.load_image(path)
        except AppError as e:
            return None, None, f"error: {e}"
        return image, display(image), f"source fitted to {image.shape[1]}x{image.shape[0]}"

    def settings_of(values):
        f, p, q, feedback, text_g, image_g, steps, seed, reward_g = values
        condition = {}
        if app.has_reward:
            g = float(reward_g or 0)
            condition = {"reward": (f, p, q), "feedback": feedback, "reward_guidance": g if g else None}
        return {"steps": steps, "seed": seed, "text_guidance": text_g, "image_guidance": image_g, **condition}

    def on_edit(image, instruction, *values):
        if image is None:
            return None, "error: upload an image or pick an example first"
        start = time.perf_counter()
        try:
            edited = app.edit(image, instruction, **settings_of(values))
        except AppError as e:
            return None, f"error: {e}"
        return display(edited), f"edited in {time.perf_counter() - start:.1f} s"

    def on_sweep(image, instruction, which, *values):
        if image is None:
            return None, "error: upload an image or pick an example first"
        start = time.perf_counter()
        try:
            row = app.sweep(image, instruction, which, **settings_of(values))
        except AppError as e:
            return None, f"error: {e}"
        return [
            (display(im), caption) for im, caption in row
        ], f"swept in {time.perf_counter() - start:.1f} s"

    with gr.Blocks(title="rewardedit-jax", analytics_enabled=False) as page:
        gr.Markdown(
            f"## Instruction-based editing with a reward condition\nModel `{app.name}`, {kind}; images are "
            f"fitted to {sizes} (limit {app.max_side} px per side, {app.max_file_bytes / 2**20:.0f} MB)."
        )
        source = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Source image", file_count="single", type="filepath", elem_id="upload")
                instruction = gr.Textbox(
                    label="Instruction",
                    value=app.examples[0].instruction if app.examples else "",
                    elem_id="instruction",
                )
                with gr.Group(visible=app.has_reward, elem_id="reward-controls"):
                    sliders = [
                        gr.Slider(0, 5, value=v, step=0.5, label=f"{name} score", elem_id=name)
                        for name, v in zip(PERSPECTIVES, reward)
                    ]
                    feedback = gr.Textbox(
                        label="Feedback", value=d.feedback or "None; None; None", elem_id="feedback"
                    )
                    reward_guidance = gr.Number(
                        value=d.reward_guidance or 0,
                        label="Reward guidance (0: off)",
                        elem_id="reward-guidance",
                    )
                with gr.Row():
                    text_guidance = gr.Number(
                        value=d.text_guidance, label="Text guidance", elem_id="text-guidance"
                    )
                    image_guidance = gr.Number(
                        value=d.image_guidance, label="Image guidance", elem_id="image-guidance"
                    )
                with gr.Row():
                    steps = gr.Number(value=d.steps, label="Steps", precision=0, minimum=1, elem_id="steps")
                    seed = gr.Number(value=d.seed, label="Seed", precision=0, minimum=0, elem_id="seed")
                edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
                with gr.Row(visible=app.has_reward, elem_id="sweep-controls"):
                    which = gr.Dropdown(
                        list(SWEEPS), value=SWEEPS[0], label="Sweep levels 1..5 of", elem_id="which"
                    )
                    sweep_button = gr.Button("Sweep", elem_id="sweep")
            with gr.Column(scale=2):
                with gr.Row():
                    source_view = gr.Image(
                        label="Source (fitted)", interactive=False, format="png", elem_id="source"
                    )
                    edited_view = gr.Image(label="Edited", interactive=False, format="png", elem_id="edited")
                sweep_view = gr.Gallery(
                    label="Sweep",
                    format="png",
                    height=280,
                    columns=len(SWEEP_LEVELS),
                    rows=1,
                    visible=app.has_reward,
                    elem_id="sweep-row",
                )
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
        if app.examples:
            gr.Examples(
                [[e.image, e.instruction] for e in app.examples], [upload, instruction], label="Test edits"
            )
        values = [*sliders, feedback, text_guidance, image_guidance, steps, seed, reward_guidance]
        upload.change(on_upload, [upload], [source, source_view, status])
        edit_button.click(on_edit, [source, instruction, *values], [edited_view, status])
        sweep_button.click(on_sweep, [source, instruction, which, *values], [sweep_view, status])
    return page


# ---------------------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rewardedit_jax.app", description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        help="diffusers pipeline folder, Flax model directory, training workdir, or Hugging Face Hub id "
        "owner/name[@revision] (default: the model `make demo` exported to $DEMO_OUT/export_reward)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    add_sampling_arguments(p, seed_help="the seed control's start value (default 42)")
    p.add_argument(
        "--resolution",
        type=int,
        help="long side of the fitted images (default: the model's recorded one, else 512)",
    )
    p.add_argument(
        "--aspects",
        default=DEFAULT_ASPECTS,
        help=f"aspect ratios of the fitted sizes (default {DEFAULT_ASPECTS})",
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=DEFAULT_MAX_SIDE,
        help=f"largest image side accepted (default {DEFAULT_MAX_SIDE})",
    )
    p.add_argument(
        "--max-file-mb",
        type=float,
        default=DEFAULT_MAX_FILE_MB,
        help=f"largest upload in MB (default {DEFAULT_MAX_FILE_MB})",
    )
    return p


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated server still removes its examples folder
    examples = tempfile.TemporaryDirectory(prefix="rewardedit-app-") if args.model is None else None
    with examples or contextlib.nullcontext() as examples_dir:
        try:
            if not 0 <= args.port < 65536:
                raise AppError(f"--port must be in 0..65535; got {args.port}")
            app = load_app(args=args, argv=argv, examples_dir=examples_dir)
            app.check_memory()
            app.warm_up()
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USER_ERROR
        return serve(app, args)


def serve(app: EditApp, args: argparse.Namespace) -> int:
    """Serve ``app``'s page until interrupted."""
    page = build_page(app)
    page.queue(default_concurrency_limit=1, max_size=64)
    _log(f"serving {app.name} on http://{args.host}:{args.port}")
    try:
        page.launch(
            server_name=args.host,
            server_port=args.port,
            max_file_size=int(args.max_file_mb * 2**20),
            quiet=True,
            footer_links=[],
        )
    except OSError as e:
        print(f"error: cannot serve on {args.host}:{args.port} ({e})", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
