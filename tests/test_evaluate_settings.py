"""`evaluate`'s settings: the flags become one frozen `EvalSettings`, checked before anything loads."""

import dataclasses
from pathlib import Path

import pytest

from rewardedit_jax import cli, sampling
from rewardedit_jax import evaluate as ev
from rewardedit_jax.evaluate import EvalSettings, build_parser


@pytest.fixture
def paths(tmp_path) -> dict[str, Path]:
    """A model folder and a data_dir where synthetic_edit/tiny and real_edit look built (their
    dataset_info.json only: reading their records would fail, so a check that needs them shows)."""
    model = tmp_path / "model"
    model.mkdir()
    data = tmp_path / "data"
    for folder in (data / "synthetic_edit" / "tiny" / "1.0.0", data / "real_edit" / "1.0.0"):
        folder.mkdir(parents=True)
        (folder / "dataset_info.json").write_text("{}")
    return {"model": model, "data": data, "out": tmp_path / "out"}


def common(paths, benchmark: str = "synthetic_edit") -> list[str]:
    return [
        *("--model", str(paths["model"]), "--benchmark", benchmark, "--data-dir", str(paths["data"])),
        *("--out", str(paths["out"]), "--no-progress"),
    ]


def test_the_flags_become_one_frozen_settings_object(paths):
    argv = common(paths) + ["--judge", "oracle", "--steps", "3", "--shared-noise", "--dtype", "float32"]
    argv += ["--reward-guidance", "2", "--low-reward", "1,1,1", "--batch-size", "2", "--limit", "5"]
    settings = EvalSettings.from_args(build_parser().parse_args(argv))
    assert settings.model == str(paths["model"].resolve()) and settings.model_step is None
    assert settings.dataset_dir == paths["data"] / "synthetic_edit" / "tiny" / "1.0.0"
    assert str(settings.out) == str(paths["out"]) and not paths["out"].exists()
    assert (settings.judge, settings.judge_config, settings.kind) == ("oracle", None, "synthetic_edit")
    assert (settings.steps, settings.batch_size, settings.limit, settings.seed) == (3, 2, 5, 42)
    assert settings.seed_per_edit is False and settings.resolution is None and settings.dtype == "float32"
    assert (settings.reward, settings.feedback) == (None, None)
    assert (settings.reward_guidance, settings.low_reward, settings.low_feedback) == (
        2.0,
        (1.0, 1.0, 1.0),
        "",
    )
    assert settings.reward_requested and settings.progress is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.steps = 4
    # evaluate()'s keywords make the same settings.
    assert settings == EvalSettings.create(
        paths["model"],
        "synthetic_edit",
        paths["data"],
        paths["out"],
        judge="oracle",
        steps=3,
        shared_noise=True,
        dtype="float32",
        reward_guidance=2,
        low_reward=(1, 1, 1),
        batch_size=2,
        limit=5,
        progress=False,
    )
    # real_edit: the official resolution, and --dtype auto resolved (float32 on the test's CPU).
    real = EvalSettings.from_args(build_parser().parse_args(common(paths, "real_edit") + ["--judge", "none"]))
    assert (real.resolution, real.dtype, real.seed_per_edit) == (512, "float32", True)
    assert real.generation("real_edit/1.0.0").as_dict()["resolution"] == 512


BAD_FLAGS = [
    (
        ["--judge", "none", "--judge-protocol", "official"],
        "--judge-protocol official applies to --judge gpt only",
    ),
    (
        ["--judge", "gpt", "--official-repo", "repo"],
        "--official-repo applies to --judge-protocol official only",
    ),
    (
        ["--judge", "gpt", "--judge-protocol", "official"],
        "--judge-protocol official needs --official-repo PATH, a clone of bytedance/Multi-Reward-Editing",
    ),
    (["--judge", "gpt", "--judge-concurrency", "0"], "--judge-concurrency must be at least 1; got 0"),
    (["--judge", "gpt"], "--judge gpt needs an API key: set OPENAI_API_KEY (or use --judge none)"),
    (
        ["--shared-noise", "--seed-per-edit"],
        "--shared-noise and --seed-per-edit contradict each other; give one",
    ),
    (["--steps", "0"], "--steps must be at least 1; got 0"),
    (["--batch-size", "0"], "--batch-size must be at least 1; got 0"),
    (["--limit", "0"], "--limit must be at least 1; got 0"),
    (["--seed", "-1"], "--seed must be in 0..4294967295; got -1"),
    (["--resolution", "4"], "--resolution must be at least 8; got 4"),
    (["--reward", "6,5,5"], "--reward scores must be in 0..5; got '6,5,5'"),
    (["--reward-guidance", "inf"], "--reward-guidance must be a finite number; got inf"),
    (
        ["--reward-guidance", "2", "--low-reward", "x"],
        "--low-reward must be three comma-separated numbers like 5,5,5; got 'x'",
    ),
    (
        ["--clip-model", "gs://bucket/clip"],
        "gs://bucket/clip: --clip-model must be a local folder or a Hugging Face Hub id "
        "owner/name[@revision]",
    ),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flags_are_one_line_errors_before_anything_loads(paths, flags, message, monkeypatch, capsys):
    def loaded(*args, **kwargs):
        raise AssertionError("loaded before the flags were checked")

    monkeypatch.setattr("rewardedit_jax.convert.load_pipeline", loaded)
    monkeypatch.setattr("rewardedit_jax.data.load_data_source", loaded)  # the benchmark's records
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert ev.main(common(paths) + flags) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
    assert not paths["out"].exists()


def test_a_real_edit_resolution_below_64_and_the_oracle_are_refused(paths, capsys):
    real = common(paths, "real_edit")
    assert ev.main([*real, "--judge", "none", "--resolution", "32"]) == 2
    assert capsys.readouterr().err.strip() == "error: --resolution must be at least 64 for real_edit; got 32"
    assert ev.main([*real, "--judge", "oracle"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --judge oracle needs the ground truth of synthetic_edit; use --judge gpt or none"
    )


def test_the_parser_choices_are_the_samplers():
    assert cli.SCHEDULER_CHOICES == sampling.SCHEDULERS and cli.DTYPE_CHOICES == sampling.DTYPES
    from rewardedit_jax.models.attention import IMPLEMENTATIONS
    from rewardedit_jax.sampling.sampler import DEFAULT_ATTENTION

    assert set(cli.ATTENTION_CHOICES) == set(IMPLEMENTATIONS)
    assert cli.ATTENTION_CHOICES[0] == DEFAULT_ATTENTION


def test_the_attention_and_batch_size_defaults_and_choice(paths, capsys):
    settings = EvalSettings.from_args(build_parser().parse_args(common(paths)))
    assert (settings.attention, settings.batch_size) == ("auto_padded", 16)
    settings = EvalSettings.from_args(build_parser().parse_args(common(paths) + ["--attention", "xla"]))
    assert settings.attention == "xla"
    with pytest.raises(SystemExit):
        build_parser().parse_args(common(paths) + ["--attention", "flash"])
    assert "--attention: invalid choice: 'flash'" in capsys.readouterr().err
