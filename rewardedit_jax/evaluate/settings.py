"""The settings of one evaluation, checked once: :meth:`EvalSettings.from_args` (the command line) and
:meth:`EvalSettings.create` (:func:`rewardedit_jax.evaluate.evaluate`'s keywords).

Every check that needs no model runs here, before anything is loaded or generated, and a failed one is an
:class:`EvaluationError` of one line naming the flag. What is left for later needs the model (whether it is
a reward model) or the benchmark's records (whether the split is empty or has references).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from etils import epath

from rewardedit_jax import cli, evaluators, hub, reference_metrics
from rewardedit_jax.evaluators import BenchmarkEdit, EvaluationError, benchmark_resolution, resolve_benchmark
from rewardedit_jax.io import PathError, check_bucket, check_creatable, is_remote, resolve, to_path

JUDGES = ("gpt", "oracle", "none")
DEFAULT_JUDGE = {"real_edit": "gpt", "synthetic_edit": "oracle"}
DEFAULT_BATCH_SIZE = cli.DEFAULT_BATCH_SIZE
# Settings whose change makes earlier edits in the output folder invalid.
GENERATION_KEYS = (
    "model",
    "model_step",
    "benchmark",
    "steps",
    "text_guidance",
    "image_guidance",
    "seed",
    "seed_per_edit",
    "resolution",
    "scheduler",
    "dtype",
    "reward",
    "feedback",
    "reward_guidance",
    "low_reward",
    "low_feedback",
)

Scores = tuple[float, float, float]

# The keywords of EvalSettings.create given by the flags of the same names (--text-guidance: text_guidance).
_CREATE_FLAGS = (
    "judge reward feedback steps text_guidance image_guidance seed seed_per_edit shared_noise resolution "
    "scheduler dtype reward_guidance low_reward low_feedback batch_size limit clip_model dino_model attention"
).split()
# The gpt judge's settings (rewardedit_jax.judge.JudgeConfig fields) and the flags that give them.
_JUDGE_FLAGS = {
    "model": "judge_model",
    "base_url": "judge_base_url",
    "concurrency": "judge_concurrency",
    "protocol": "judge_protocol",
    "official_repo": "official_repo",
}


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """What the edits in an output folder were made with (``generation.json``'s ``requested``)."""

    model: str
    benchmark: str
    steps: int
    text_guidance: float
    image_guidance: float
    seed: int
    resolution: int | None  # None: native (synthetic_edit)
    scheduler: str
    dtype: str
    reward: Scores | None  # None: the model's default (5,5,5 for reward models)
    feedback: str | None
    # Edit i is seeded with seed + i (its index in the split): independent noise per edit, as the official
    # eval.py draws fresh noise for every edit. False (--shared-noise): every edit is seeded with seed.
    seed_per_edit: bool = True
    model_step: int | None = None  # a training workdir's checkpoint step (its latest unless one is named)
    reward_guidance: float | None = None  # None: off; then low_reward and low_feedback are None too
    low_reward: Scores | None = None
    low_feedback: str | None = None

    def seed_of(self, edit: BenchmarkEdit) -> int:
        return evaluators.edit_seed(self.seed, edit) if self.seed_per_edit else self.seed

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for key in ("reward", "low_reward"):
            out[key] = None if out[key] is None else list(out[key])
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """Everything one evaluation was asked to do, checked and resolved: absolute model and output paths,
    the prepared dataset folder, the judge (with its configuration for gpt), the sampling settings (dtype
    ``auto`` resolved, the real_edit resolution defaulted), the batch size and the reference models."""

    # The model folder, resolved (a URL stays a URL); a Hugging Face Hub id pinned to the commit it resolved
    # to (owner/name@commit), which names the same files on every machine and in every later run.
    model: str
    model_step: int | None  # a training workdir's checkpoint step
    benchmark: str  # as given: real_edit or synthetic_edit[/CONFIG]
    dataset_dir: epath.Path  # the prepared version folder of the benchmark
    out: epath.Path
    judge: str  # one of JUDGES
    judge_config: Any  # the gpt judge's rewardedit_jax.judge.JudgeConfig (cache path set); else None
    steps: int
    text_guidance: float
    image_guidance: float
    seed: int
    seed_per_edit: bool
    resolution: int | None
    scheduler: str
    dtype: str  # float32 or bfloat16
    reward: Scores | None
    feedback: str | None
    reward_guidance: float | None
    low_reward: Scores | None  # None without reward guidance
    low_feedback: str | None  # None without reward guidance
    batch_size: int
    limit: int | None
    clip_model: str | None  # absolute local folders (a Hub id's snapshot folder, named by its commit)
    dino_model: str | None
    compiler_options: Mapping[str, Any] | None = None
    progress: bool = True
    attention: str = cli.ATTENTION_CHOICES[0]  # the sampler's attention implementation

    @property
    def kind(self) -> str:
        """The benchmark's name without its config: real_edit or synthetic_edit."""
        return self.benchmark.partition("/")[0]

    @property
    def reward_requested(self) -> bool:
        """Whether a reward condition was asked for (an error for a stock model)."""
        return self.reward is not None or self.feedback is not None or self.reward_guidance is not None

    def generation(self, benchmark: str) -> GenerationSettings:
        """The generation settings for the benchmark's full name (``synthetic_edit/tiny/1.0.0``)."""
        return GenerationSettings(
            model=self.model,
            benchmark=benchmark,
            steps=self.steps,
            text_guidance=self.text_guidance,
            image_guidance=self.image_guidance,
            seed=self.seed,
            resolution=self.resolution,
            scheduler=self.scheduler,
            dtype=self.dtype,
            reward=self.reward,
            feedback=self.feedback,
            seed_per_edit=self.seed_per_edit,
            reward_guidance=self.reward_guidance,
            low_reward=self.low_reward,
            low_feedback=self.low_feedback,
            model_step=self.model_step,
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EvalSettings:
        """The settings of ``python -m rewardedit_jax.evaluate``'s parsed flags (call after the multi-host
        start: ``--dtype auto`` asks jax for the backend)."""
        gpt = args.judge == "gpt" or (args.judge is None and args.benchmark.startswith("real_edit"))
        if args.judge_protocol == "official" and not gpt:
            raise EvaluationError("--judge-protocol official applies to --judge gpt only")
        if args.judge_protocol == "official" and not args.official_repo:
            raise EvaluationError(
                "--judge-protocol official needs --official-repo PATH, "
                "a clone of bytedance/Multi-Reward-Editing"
            )
        if args.official_repo and args.judge_protocol != "official":
            raise EvaluationError("--official-repo applies to --judge-protocol official only")
        judge_config = None
        if gpt:
            if args.judge_concurrency < 1:
                raise EvaluationError(f"--judge-concurrency must be at least 1; got {args.judge_concurrency}")
            from rewardedit_jax.judge import JudgeConfig

            try:
                judge_config = JudgeConfig(**{key: getattr(args, flag) for key, flag in _JUDGE_FLAGS.items()})
            except ValueError as e:
                raise EvaluationError(str(e)) from None
        options = {name: getattr(args, name) for name in _CREATE_FLAGS}
        return cls.create(
            args.model,
            args.benchmark,
            args.data_dir,
            args.out,
            judge_config=judge_config,
            progress=not args.no_progress,
            **options,
        )

    @classmethod
    def create(
        cls,
        model: str | os.PathLike,
        benchmark: str,
        data_dir: str | os.PathLike,
        out: str | os.PathLike,
        *,
        judge: str | None = None,
        reward: str | Sequence[float] | None = None,
        feedback: str | None = None,
        steps: int = 30,
        text_guidance: float = 7.5,
        image_guidance: float = 1.5,
        seed: int = 42,
        seed_per_edit: bool | None = None,
        shared_noise: bool = False,
        resolution: int | None = None,
        scheduler: str = "euler_ancestral",
        dtype: str = "auto",
        reward_guidance: float | None = None,
        low_reward: str | Sequence[float] = "0,0,0",
        low_feedback: str = "",
        batch_size: int = DEFAULT_BATCH_SIZE,
        limit: int | None = None,
        clip_model: str | os.PathLike | None = None,
        dino_model: str | os.PathLike | None = None,
        judge_config=None,
        compiler_options: Mapping[str, Any] | None = None,
        progress: bool = True,
        attention: str = cli.ATTENTION_CHOICES[0],
    ) -> EvalSettings:
        """Checked settings from :func:`rewardedit_jax.evaluate.evaluate`'s arguments (documented there)."""
        kind = benchmark.partition("/")[0]
        judge = judge or DEFAULT_JUDGE.get(kind, "none")
        if judge not in JUDGES:
            raise EvaluationError(f"--judge must be one of {', '.join(JUDGES)}; got {judge!r}")
        if judge == "oracle" and kind != "synthetic_edit":
            raise EvaluationError(
                "--judge oracle needs the ground truth of synthetic_edit; use --judge gpt or none"
            )
        for flag, value in (("--steps", steps), ("--batch-size", batch_size), ("--limit", limit)):
            if value is not None and value < 1:
                raise EvaluationError(f"{flag} must be at least 1; got {value}")
        if resolution is not None and resolution < 8:
            raise EvaluationError(f"--resolution must be at least 8; got {resolution}")
        if shared_noise and seed_per_edit:
            raise EvaluationError("--shared-noise and --seed-per-edit contradict each other; give one")
        if not 0 <= seed < 2**32:
            raise EvaluationError(f"--seed must be in 0..{2**32 - 1}; got {seed}")
        if scheduler not in cli.SCHEDULER_CHOICES:
            raise EvaluationError(f"--scheduler must be one of {', '.join(cli.SCHEDULER_CHOICES)}")
        if dtype not in cli.DTYPE_CHOICES:
            raise EvaluationError(f"--dtype must be one of {', '.join(cli.DTYPE_CHOICES)}")
        if attention not in cli.ATTENTION_CHOICES:
            raise EvaluationError(f"--attention must be one of {', '.join(cli.ATTENTION_CHOICES)}")
        reward_scores = _parse_scores(reward, "--reward")
        if reward_guidance is not None and not math.isfinite(reward_guidance):
            raise EvaluationError(f"--reward-guidance must be a finite number; got {reward_guidance}")
        low_scores = _parse_scores(low_reward, "--low-reward") if reward_guidance is not None else None
        # Hub ids are resolved after every other check: resolving one may download it.
        hub_id, clip_hub, dino_hub = (hub.parse_hub_id(m) for m in (model, clip_model, dino_model))
        try:
            model_path = to_path(model, expanduser=True)
            out = to_path(out, expanduser=True)
            check_bucket(out)
            check_creatable(out, "--out")  # before anything is loaded or generated
        except PathError as e:
            raise EvaluationError(str(e)) from None
        if hub_id is None and not model_path.exists():
            raise EvaluationError(f"{model_path}: no such model folder")
        if hub_id is None and not model_path.is_dir():
            raise EvaluationError(f"{model_path}: not a model folder")
        clip_model = None if clip_hub else _scoring_model(clip_model, "--clip-model")
        dino_model = None if dino_hub else _scoring_model(dino_model, "--dino-model")
        if out.exists() and not out.is_dir():
            raise EvaluationError(f"{out}: not a folder")
        if judge == "gpt" and is_remote(out):
            raise EvaluationError(
                f"{out}: --judge gpt needs a local --out (its cache is sqlite and the judge reads the images "
                "from disk); use a local folder or --judge none"
            )
        if judge == "gpt":
            judge_config = _gpt_config(judge_config, out)
        dataset_dir = resolve_benchmark(benchmark, data_dir)
        resolution = benchmark_resolution(kind, resolution)
        if kind == "real_edit" and resolution < 64:
            raise EvaluationError(f"--resolution must be at least 64 for real_edit; got {resolution}")
        if hub_id is not None:
            found = _fetch(hub_id)
            model_path, model = epath.Path(found.folder), found.pinned
        else:
            model = str(resolve(model_path))
        if clip_hub is not None:
            clip_model = _scoring_model(_fetch(clip_hub, "--clip-model").folder, "--clip-model")
        if dino_hub is not None:
            dino_model = _scoring_model(_fetch(dino_hub, "--dino-model").folder, "--dino-model")
        model_step = _workdir_step(model_path)
        from rewardedit_jax.sampling import resolve_dtype

        return cls(
            model=model,
            model_step=model_step,
            benchmark=benchmark,
            dataset_dir=dataset_dir,
            out=out,
            judge=judge,
            judge_config=judge_config if judge == "gpt" else None,
            steps=int(steps),
            text_guidance=float(text_guidance),
            image_guidance=float(image_guidance),
            seed=int(seed),
            seed_per_edit=not shared_noise and seed_per_edit is not False,
            resolution=resolution,
            scheduler=scheduler,
            dtype=resolve_dtype(dtype),
            reward=reward_scores,
            feedback=feedback,
            reward_guidance=None if reward_guidance is None else float(reward_guidance),
            low_reward=low_scores,
            low_feedback=None if reward_guidance is None else str(low_feedback),
            batch_size=batch_size,
            limit=limit,
            clip_model=clip_model,
            dino_model=dino_model,
            compiler_options=dict(compiler_options) if compiler_options else None,
            progress=progress,
            attention=attention,
        )


def _parse_scores(scores, flag: str) -> Scores | None:
    """Three scores given as ``"5,5,5"`` or a sequence of numbers."""
    if scores is None:
        return None
    try:
        if isinstance(scores, str):
            return cli.parse_scores(scores, flag)
        return cli.parse_scores(",".join(str(float(s)) for s in scores), flag)
    except cli.UsageError as e:
        raise EvaluationError(str(e)) from None
    except (TypeError, ValueError):
        raise EvaluationError(f"bad {flag} {scores!r}") from None


def _fetch(hub_id: tuple[str, str | None], flag: str = "") -> hub.HubModel:
    """A Hub id's model, downloaded or found in the cache; an :class:`EvaluationError` naming ``flag`` and
    the id otherwise."""
    try:
        return hub.fetch(*hub_id)
    except PathError as e:
        raise EvaluationError(f"{flag} {e}".lstrip()) from None


def _check_clip_model(folder: str) -> str:
    if not Path(folder).is_dir():
        raise reference_metrics.MetricModelError(f"{folder}: no such CLIP model folder")
    return folder


def _scoring_model(path, flag: str) -> str | None:
    """The absolute local folder of ``--clip-model`` or ``--dino-model`` (checked as far as it can be without
    loading it), or None when not given."""
    if path is None:
        return None
    if is_remote(path):
        raise EvaluationError(
            f"{path}: {flag} must be a local folder or a Hugging Face Hub id owner/name[@revision]"
        )
    check = _check_clip_model if flag == "--clip-model" else reference_metrics.check_dino_model
    try:
        return check(str(Path(path).expanduser().resolve()))
    except reference_metrics.MetricModelError as e:
        raise EvaluationError(str(e)) from None


def _workdir_step(model: epath.Path) -> int | None:
    """The checkpoint step a training workdir (or one of its checkpoints) is evaluated at; else None."""
    from rewardedit_jax.convert import training_source

    found = training_source(model)
    if found is None:
        return None
    workdir, step = found
    if step is None:
        from rewardedit_jax.workdir import latest_step

        step = latest_step(workdir)
    return step


def _gpt_config(judge_config, out: epath.Path):
    """The judge's configuration with its cache in ``out`` unless it names one; an API key must be set."""
    from rewardedit_jax.judge import JudgeConfig, api_key_from_env

    judge_config = judge_config or JudgeConfig()
    if judge_config.cache_path is None:
        judge_config = dataclasses.replace(judge_config, cache_path=str(out / "judge-cache.sqlite"))
    if not api_key_from_env(judge_config.azure):
        names = "AZURE_OPENAI_API_KEY or OPENAI_API_KEY" if judge_config.azure else "OPENAI_API_KEY"
        raise EvaluationError(f"--judge gpt needs an API key: set {names} (or use --judge none)")
    evaluators.gpt_metadata(judge_config)  # a missing or changed official file: a one-line error, now
    return judge_config


def check_generation_settings(out: epath.Path, settings: GenerationSettings) -> None:
    """Refuse to mix edits made with other generation settings into one output folder."""
    path = out / "generation.json"
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())["requested"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EvaluationError(f"{path}: unreadable; remove it or use another --out") from None
    current = settings.as_dict()
    # Folders written before these settings existed (their model step was not recorded: taken as equal).
    saved = {
        "seed_per_edit": False,
        "model_step": current["model_step"],
        **dict.fromkeys(("reward_guidance", "low_reward", "low_feedback")),
        **saved,
    }
    changed = [k for k in GENERATION_KEYS if saved.get(k) != current[k]]
    if changed:
        what = "; ".join(f"{k} {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise EvaluationError(f"{out} holds edits made with other settings ({what}); use another --out")
