"""The synthetic edits: determinism, the vocabulary, and rewards that agree with the ground truth."""

import collections
import time

import numpy as np
import pytest

from rewardedit_jax.data import synthetic

CONFIG = synthetic.SyntheticConfig(resolution=32)
PERFECT = synthetic.PERFECT_TEXT


@pytest.fixture(scope="module")
def train_examples():
    return [synthetic.generate(CONFIG, "train", i) for i in range(1500)]


def test_generation_is_deterministic_given_seed_split_and_index():
    a, b = synthetic.generate(CONFIG, "train", 7), synthetic.generate(CONFIG, "train", 7)
    for field in ("source", "target", "content", "edited", "reward_scores"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert (a.instruction, a.reward_texts, a.corruptions) == (b.instruction, b.reward_texts, b.corruptions)
    other = synthetic.generate(synthetic.SyntheticConfig(seed=1), "train", 7)
    assert not np.array_equal(a.source, other.source) or a.instruction != other.instruction


def test_test_split_holds_correct_edits_with_perfect_rewards():
    for i in range(50):
        example = synthetic.generate(CONFIG, "test", i)
        np.testing.assert_array_equal(example.edited, example.target)
        assert example.corruptions == () and example.reward_scores.tolist() == [5, 5, 5]
        assert example.reward_texts == (PERFECT,) * 3
        assert not np.array_equal(example.source, example.target)  # Every edit changes something.


def test_images_have_the_configured_resolution_and_dtype():
    for resolution in (16, 64):
        example = synthetic.generate(synthetic.SyntheticConfig(resolution=resolution), "train", 0)
        assert example.source.shape == example.edited.shape == (resolution, resolution, 3)
        assert example.edited.dtype == np.uint8


def test_instructions_use_a_small_fixed_vocabulary(train_examples):
    words = {w for e in train_examples for w in e.instruction.split()}
    assert len(words) <= 40, sorted(words)
    assert {e.edit_type for e in train_examples} == set(synthetic.EDIT_TYPES)


def test_every_corruption_occurs_with_every_edit_type_it_applies_to(train_examples):
    seen = {(e.edit_type, c) for e in train_examples for c in e.corruptions}
    not_applicable = {("remove", "wrong_color"), ("move", "wrong_color"), ("remove", "background_change")}
    not_applicable |= {("move", "background_change"), ("background", "background_change")}
    not_applicable |= {("background", "distractor")}
    every = {(t, c) for t in synthetic.EDIT_TYPES for kinds in synthetic.CORRUPTIONS.values() for c in kinds}
    assert seen == every - not_applicable


def test_corruptions_are_drawn_with_their_weights():
    rng = np.random.default_rng(0)
    options = ["other_recolor", "background_change", "distractor"]
    draws = collections.Counter(synthetic._corruption_choice(rng, options) for _ in range(7000))
    weights = {o: synthetic.CORRUPTION_WEIGHTS.get(o, 1.0) for o in options}
    assert weights["background_change"] > 1.0
    for option in options:
        expected = weights[option] / sum(weights.values())
        assert abs(draws[option] / 7000 - expected) < 0.02, (option, draws)
    assert synthetic._corruption_choice(rng, ["noise"]) == "noise"


def test_corruption_fraction_is_about_the_configured_share(train_examples):
    share = np.mean([bool(e.corruptions) for e in train_examples])
    assert abs(share - CONFIG.corruption_fraction) < 0.06
    none = [
        synthetic.generate(synthetic.SyntheticConfig(corruption_fraction=0.0), "train", i) for i in range(30)
    ]
    assert all(e.corruptions == () for e in none)


def test_scores_are_recomputed_from_the_images(train_examples):
    for e in train_examples:
        np.testing.assert_array_equal(
            e.reward_scores, synthetic.score_edit(e.source, e.content, e.target, e.edited)
        )
        assert e.reward_scores.dtype == np.float32 and ((0 <= e.reward_scores) & (e.reward_scores <= 5)).all()


def test_each_corruption_lowers_only_its_own_perspective(train_examples):
    by_kind = collections.defaultdict(list)
    for e in train_examples:
        if len(e.corruptions) <= 1:
            by_kind[e.corruptions[0] if e.corruptions else "none"].append(e.reward_scores)
    expected_low = {kind: p for p, kinds in synthetic.CORRUPTIONS.items() for kind in kinds}
    index = {"following": 0, "preserving": 1, "quality": 2}
    assert set(by_kind) == {"none", *expected_low}
    assert np.all(np.asarray(by_kind["none"]) == 5.0)
    for kind, perspective in expected_low.items():
        scores = np.asarray(by_kind[kind])
        low = index[perspective]
        others = [i for i in range(3) if i != low]
        assert np.all(scores[:, others] == 5.0), (kind, scores)
        assert scores[:, low].mean() < 4.0, (kind, scores[:, low])
    assert np.all(np.asarray(by_kind["wrong_color"])[:, 0] == 0.0)
    assert np.all(np.asarray(by_kind["no_edit"])[:, 0] == 0.0)
    assert np.all(np.asarray(by_kind["background_change"])[:, 1] == 0.0)
    incomplete = np.asarray(by_kind["incomplete"])[:, 0]
    assert np.all((incomplete > 0.5) & (incomplete < 4.5))


def test_texts_are_perfect_exactly_when_the_score_is_five(train_examples):
    for e in train_examples:
        for score, text in zip(e.reward_scores, e.reward_texts):
            assert (text == PERFECT) == (score == 5.0), (e.corruptions, e.reward_scores, e.reward_texts)


def test_texts_name_the_failure(train_examples):
    for e in train_examples:
        following, preserving, quality = e.reward_texts
        if e.corruptions == ("wrong_color",):
            assert " instead of " in following
        if e.corruptions == ("other_recolor",):
            assert "which was not requested" in preserving
        if e.corruptions == ("noise",) and e.reward_scores[2] < 5:
            assert "noisy" in quality
        if e.corruptions == ("blur",) and e.reward_scores[2] < 5:
            assert "blurry" in quality
        if e.corruptions == ("washed_out",):
            assert "washed out" in quality


def test_perfect_text_is_configurable():
    config = synthetic.SyntheticConfig(perfect_text="None")
    assert synthetic.generate(config, "test", 0).reward_texts == ("None", "None", "None")


def test_generation_rate_is_thousands_of_examples_per_minute_on_one_core():
    start = time.perf_counter()
    count = 300
    for i in range(count):
        synthetic.generate(CONFIG, "train", i).as_tfds_example()
    per_minute = count / (time.perf_counter() - start) * 60
    print(f"synthetic_edit/32px: {per_minute:,.0f} examples per minute (generation + PNG encoding, one core)")
    assert per_minute > 5_000
