"""Oracle judge: the ground truth scores 5 / yes, a failure scores low on its perspective."""

import numpy as np
import pytest

from rewardedit_jax import oracle
from rewardedit_jax.data import synthetic

CONFIG = synthetic.SyntheticConfig(resolution=32)


def scores(judgment) -> dict:
    return {p: judgment[p]["score"] for p in oracle.PERSPECTIVES}


def answers(judgment) -> dict:
    return {p: judgment[p]["answer"] for p in oracle.PERSPECTIVES}


def noised(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = image / 255.0 + rng.normal(0.0, sigma, image.shape)
    return np.clip(np.round(noisy * 255.0), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("index", range(16))
def test_ground_truth_target_scores_five_and_yes_on_all_three(index):
    example = synthetic.generate(CONFIG, "test", index)
    judgment = oracle.judge_edit(example.source, example.target, example.target, {"edit_type": "x"})
    assert judgment == {p: {"answer": "yes", "score": 5.0} for p in oracle.PERSPECTIVES}


@pytest.mark.parametrize("index", range(16))
def test_untouched_source_scores_low_on_following_only(index):
    example = synthetic.generate(CONFIG, "test", index)
    judgment = oracle.judge_edit(example.source, example.source, example.target)
    assert judgment["following"] == {"answer": "no", "score": 0.0}
    assert scores(judgment)["preserving"] == scores(judgment)["quality"] == 5.0


@pytest.mark.parametrize("index", range(8))
def test_noised_target_scores_lower_on_quality_only(index):
    example = synthetic.generate(CONFIG, "test", index)
    clean = scores(oracle.judge_edit(example.source, example.target, example.target))
    mild = oracle.judge_edit(example.source, noised(example.target, 0.05, index), example.target)
    strong = oracle.judge_edit(example.source, noised(example.target, 0.1, index), example.target)
    assert answers(strong) == {"following": "yes", "preserving": "yes", "quality": "no"}
    assert scores(strong)["following"] == scores(strong)["preserving"] == 5.0
    # Quality falls with the noise level: sigma 0.05 -> about 26 dB, sigma 0.1 -> about 20 dB (quality 2).
    assert clean["quality"] > scores(mild)["quality"] > scores(strong)["quality"]
    assert 1.8 <= scores(strong)["quality"] <= 2.8


def test_blurred_target_scores_lower_on_quality():
    example = synthetic.generate(CONFIG, "test", 0)
    blurred = synthetic.gaussian_blur(example.target.astype(np.float32) / 255.0, 1.2)
    blurred = np.clip(np.round(blurred * 255.0), 0, 255).astype(np.uint8)
    judgment = oracle.judge_edit(example.source, blurred, example.target)
    assert judgment["quality"]["answer"] == "no" and judgment["quality"]["score"] < 3.5
    assert judgment["following"]["score"] >= 4.0


@pytest.mark.parametrize("wash", [synthetic.WASH[0], synthetic.WASH[1]])
def test_washed_out_target_snaps_back_and_scores_lower_on_quality_only(wash):
    """Faded colours (the `washed_out` corruption at its extremes) keep every pixel's palette colour."""
    for index in range(8):
        example = synthetic.generate(CONFIG, "test", index)
        target = example.target.astype(np.float32)
        faded = np.clip(np.round(target + wash * (synthetic.WASH_GREY - target)), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(oracle.snap_to_palette(faded), example.target)
        judgment = scores(oracle.judge_edit(example.source, faded, example.target))
        assert judgment["following"] == judgment["preserving"] == 5.0
        assert judgment["quality"] < (3.0 if wash == synthetic.WASH[0] else 1.8), (index, judgment)


def test_oracle_reproduces_the_stored_training_labels():
    """The oracle re-derives the labels of imperfect train edits (it must estimate the clean image)."""
    differences = []
    for index in range(200):
        example = synthetic.generate(CONFIG, "train", index)
        judgment = oracle.judge_edit(example.source, example.edited, example.target)
        got = np.array([judgment[p]["score"] for p in oracle.PERSPECTIVES])
        differences.append(np.abs(got - example.reward_scores))
        for p, score in scores(judgment).items():
            assert judgment[p]["answer"] == ("yes" if score >= oracle.YES_THRESHOLD else "no")
    differences = np.array(differences)
    assert differences.mean() < 0.05
    assert (differences <= 0.31).mean(axis=0).min() >= 0.95
    assert (differences < 0.05).mean(axis=0).min() >= 0.85


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_snap_keeps_every_rendered_scene(resolution):
    config = synthetic.SyntheticConfig(resolution=resolution)
    for index in range(60):
        example = synthetic.generate(config, "train", index)
        for image in (example.source, example.target, example.content):
            np.testing.assert_array_equal(oracle.snap_to_palette(image), image)


def test_snap_removes_a_lone_outlier():
    example = synthetic.generate(CONFIG, "train", 3)
    target = example.target
    # A pixel inside a uniform 3x3 patch turned into another (slightly off) palette colour: a lone outlier.
    y, x = next(
        (y, x)
        for y in range(1, 31)
        for x in range(1, 31)
        if (target[y - 1 : y + 2, x - 1 : x + 2] == target[y, x]).all()
    )
    other = next(c for c in synthetic.COLORS.values() if c != tuple(target[y, x]))
    outlier = target.copy()
    outlier[y, x] = np.clip(np.array(other) + 7, 0, 255)
    np.testing.assert_array_equal(oracle.snap_to_palette(outlier), target)


def test_images_of_different_sizes_or_types_are_rejected():
    example = synthetic.generate(CONFIG, "test", 0)
    with pytest.raises(ValueError, match="one size"):
        oracle.judge_edit(example.source, example.target[:16], example.target)
    with pytest.raises(ValueError, match="uint8"):
        oracle.judge_edit(example.source, example.target.astype(np.float32), example.target)
