"""Making an evaluation's edits: the missing ones, sharded over the devices and hosts, written as PNGs."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from rewardedit_jax import evaluators, report
from rewardedit_jax.evaluate.outputs import OutputFolder, open_rgb, progress_bar, versions_info
from rewardedit_jax.evaluate.settings import EvalSettings, GenerationSettings
from rewardedit_jax.evaluators import EvaluationError
from rewardedit_jax.io import PathError


def generate_missing(
    folder: OutputFolder,
    settings: EvalSettings,
    generation: GenerationSettings,
    stats: dict,
    log: Callable[[str], None],
) -> None:
    """Make the edits ``folder`` lacks, sharded over this host's devices; in a multi-host job each host makes
    its share of each size group (:mod:`rewardedit_jax.parallel`) and process 0 counts them all in
    ``stats`` (``generated``, ``reused_images``, ``compilations``)."""
    from rewardedit_jax import parallel

    edits = folder.bench.edits
    hosts, host = parallel.hosts()
    missing = np.asarray([not folder.image_path(e).is_file() for e in edits])
    # Process 0's view, taken before any host writes an edit: every host works on the same list.
    missing = parallel.broadcast_from_first(missing)
    pending = [e for e, m in zip(edits, missing) if m]
    stats["reused_images"] = len(edits) - len(pending)
    if stats["reused_images"]:
        log(f"reusing {stats['reused_images']} edits already in {folder.out / 'images'}")
    if not pending:
        return
    sampler = _load_sampler(folder, settings, generation, log)
    jobs = evaluators.edit_jobs(
        folder.bench,
        pending,
        resolution=settings.resolution,
        multiple=sampler.vae_factor,
        seed_of=generation.seed_of,
    )
    groups: dict[tuple[int, int], int] = {}
    for job in jobs:
        if host == 0 and not folder.input_path(job.key).is_file():
            report.atomic_write_png(folder.input_path(job.key), job.image)
        groups[job.image.shape[:2]] = groups.get(job.image.shape[:2], 0) + 1
    sizes = ", ".join(f"{w}x{h} ({n})" for (h, w), n in sorted(groups.items()))
    devices = parallel.sampler_devices(sampler)
    where = f"{devices} device{'s' * (devices > 1)}" + (f" on each of {hosts} hosts" if hosts > 1 else "")
    log(f"generating {len(pending)} edits in {len(groups)} size{'s' * (len(groups) > 1)}: {sizes} ({where})")
    share = sum(len(range(host, n, hosts)) for n in groups.values())
    compiles_before = sampler.compile_count
    start = time.perf_counter()
    with progress_bar(share, "generating", settings.progress) as bar:
        made = parallel.generate(
            sampler,
            jobs,
            lambda job, image: report.atomic_write_png(folder.image_path(job.key), image),
            batch_size=settings.batch_size,
            hosts=hosts,
            host=host,
            on_call=bar.update,
            num_steps=settings.steps,
            text_guidance=settings.text_guidance,
            image_guidance=settings.image_guidance,
            **_condition(settings, sampler.has_reward),
        )
    compilations = sampler.compile_count - compiles_before
    # Every host's count; also the barrier after which process 0 finds every edit written.
    counts = parallel.gather(np.asarray([made, compilations], np.int64))
    stats["generated"] = int(counts[:, 0].sum())
    stats["compilations"] = int(counts[:, 1].max())  # per host: each size compiles once
    lost = [e for e in pending if not folder.image_path(e).is_file()] if hosts > 1 and host == 0 else []
    if lost:
        raise EvaluationError(
            f"{folder.out / 'images'} lacks {len(lost)} edits other hosts made (e.g. {lost[0].name}.png); "
            "--out must be a folder every host writes to (a shared file system or gs://)"
        )
    log(
        f"generated {stats['generated']} edits in {time.perf_counter() - start:.1f} s "
        f"({stats['compilations']} compilations)"
    )


def _condition(settings: EvalSettings, has_reward: bool) -> dict:
    """The sampler's reward-condition keywords (a stock model takes none)."""
    kwargs = {}
    if has_reward:
        kwargs = {"reward_scores": settings.reward, "feedback": settings.feedback}
    if settings.reward_guidance is not None:
        kwargs.update(
            reward_guidance=settings.reward_guidance,
            low_reward_scores=settings.low_reward,
            low_feedback=settings.low_feedback,
        )
    return kwargs


def _load_sampler(
    folder: OutputFolder, settings: EvalSettings, generation: GenerationSettings, log: Callable[[str], None]
):
    """The sampler of the model; process 0 records the generation settings and the reward condition the
    model gets in ``generation.json``."""
    import jax
    import jax.numpy as jnp

    from rewardedit_jax import parallel
    from rewardedit_jax.convert import ConversionError, load_pipeline
    from rewardedit_jax.sampling import EditSampler
    from rewardedit_jax.schedule import ScheduleError

    s = settings
    dtype = jnp.dtype(s.dtype)
    start = time.perf_counter()
    log(f"loading {s.model} ({s.dtype}, {jax.default_backend()})")
    try:
        pipeline = load_pipeline(s.model, param_dtype=dtype, compute_dtype=dtype)
    except (ConversionError, PathError) as e:
        raise EvaluationError(str(e)) from None
    log(f"loaded in {time.perf_counter() - start:.1f} s")
    has_reward = bool(pipeline.unet.has_reward)
    if not has_reward and s.reward_requested:
        given = {"--reward": s.reward, "--feedback": s.feedback, "--reward-guidance": s.reward_guidance}
        flags = ", ".join(f for f, v in given.items() if v is not None)
        raise EvaluationError(f"{s.model} is not a reward model; {flags} apply to reward models only")
    try:
        sampler = EditSampler.from_pipeline(
            pipeline,
            scheduler=s.scheduler,
            dtype=dtype,
            mesh=parallel.local_mesh(),  # the batch sharded over this host's devices
            attention=s.attention,
            log=log,
            compiler_options=s.compiler_options,
        )
    except ScheduleError as e:
        raise EvaluationError(f"{s.model}: {e}") from None
    reward_condition = None
    if has_reward:
        from rewardedit_jax.models.reward import BEST_FEEDBACK, BEST_SCORES

        reward_condition = {
            "reward": list(s.reward or BEST_SCORES),
            "feedback": BEST_FEEDBACK if s.feedback is None else s.feedback,
        }
        if s.reward_guidance is not None:
            reward_condition["reward_guidance"] = {
                "scale": s.reward_guidance,
                "low_reward": list(s.low_reward),
                "low_feedback": s.low_feedback,
            }
    if jax.process_index() == 0:
        report.atomic_write_json(
            folder.out / "generation.json",
            {
                "requested": generation.as_dict(),
                "reward_condition": reward_condition,
                "versions": versions_info(),
            },
        )
    return sampler


def ensure_side_files(folder: OutputFolder) -> None:
    """The fitted inputs (and targets) the report shows, for edits generated by an earlier run."""
    bench = folder.bench
    for edit in bench.edits:
        if not folder.input_path(edit).is_file():
            with open_rgb(folder.image_path(edit)) as edited:
                size = edited.size  # the fitted input has the edit's size
            report.atomic_write_png(folder.input_path(edit), evaluators.fit_image(bench.source(edit), size))
        if bench.has_references and not folder.target_path(edit).is_file():
            report.atomic_write_png(folder.target_path(edit), np.asarray(bench.target(edit)))
