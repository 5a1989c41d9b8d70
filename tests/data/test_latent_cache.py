"""The latent cache: cached values equal direct encodings, float16 error bound, reader semantics, no TF."""

import json

import numpy as np
import pytest
from fixtures_data import assert_batches_equal, assert_iterates_without_tensorflow

from rewardedit_jax import convert
from rewardedit_jax.data import images, latent_cache, pipeline, synthetic
from rewardedit_jax.data.precompute import main as precompute_main

DATASET = "synthetic_edit/tiny"  # 48 train / 16 test examples, 32x32.
BATCH = 20  # 48 = 20 + 20 + 8: the last batch is padded to the compiled shape.
FLOAT16_RTOL, FLOAT16_ATOL = 2.0**-11, 2.0**-25  # Round-to-nearest float16 (subnormals below 2**-14).


@pytest.fixture(scope="module")
def model(tiny_pipeline_dir):
    """The pipeline whose VAE and text encoder fill the caches."""
    return tiny_pipeline_dir


def build(model, data_dir, out, **kwargs):
    options = dict(data_dir=data_dir, out_dir=out, resolution=32, batch_size=BATCH, progress=False)
    return latent_cache.precompute(model, DATASET, "train", **{**options, **kwargs})


@pytest.fixture(scope="module")
def cache(model, synthetic_data_dir, tmp_path_factory):
    """The float32 cache of the whole train split (with flips)."""
    out = tmp_path_factory.mktemp("cache") / "float32"
    build(model, synthetic_data_dir, out, dtype="float32")
    return out


@pytest.fixture(scope="module")
def encoders(model):
    return convert.load_vae(model), convert.load_text_encoder(model), convert.load_tokenizer(model)


def read(cache_dir, **kwargs):
    options = dict(global_batch_size=8, seed=3, num_epochs=2, shard_index=0, shard_count=1, read_threads=0)
    return latent_cache.make_latent_dataset(cache_dir, **{**options, **kwargs})


def test_records_round_trip_without_pickle_and_refuse_what_they_cannot_store():
    arrays = {
        "latent": np.arange(24, dtype=np.float16).reshape(2, 3, 4)[:, ::-1],  # Not contiguous.
        "big_endian": np.arange(3, dtype=">f4"),
        "record_index": np.int32(7),
    }
    decoded = latent_cache.decode_record(latent_cache.encode_record(arrays))
    assert list(decoded) == list(arrays)
    for name, value in arrays.items():
        assert decoded[name].shape == np.shape(value)
        np.testing.assert_array_equal(decoded[name], value)
    with pytest.raises(latent_cache.LatentCacheError, match="cannot be stored"):
        latent_cache.encode_record({"x": np.zeros(2, np.float64)})
    with pytest.raises(latent_cache.LatentCacheError, match="truncated"):
        latent_cache.decode_record(latent_cache.encode_record({"x": np.zeros(4, np.float32)})[:-8])


def test_cache_info_describes_the_cache(cache, model):
    info = json.loads((cache / latent_cache.INFO_FILE).read_text())
    assert info["format_version"] == latent_cache.FORMAT_VERSION
    assert (info["dataset"], info["split"], info["num_examples"]) == (
        f"synthetic_edit/tiny/{synthetic.DATASET_VERSION}",
        "train",
        48,
    )
    assert (info["resolution"], info["latent_shape"], info["text_length"], info["text_dim"]) == (
        32,
        [16, 16, 4],
        77,
        32,
    )
    assert (info["dtype"], info["flips"], info["has_rewards"]) == ("float32", True, True)
    assert info["scaling_factor"] == pytest.approx(0.18215)
    assert info["model_path"] == str(model.absolute())


def test_cached_values_equal_a_direct_flax_encoding_of_the_same_example(cache, encoders, synthetic_data_dir):
    vae, text_encoder, tokenizer = encoders
    records, _ = latent_cache.load_latent_source(cache)
    source, _ = pipeline.load_data_source(DATASET, "train", synthetic_data_dir)
    for i in (0, 21, 47):  # Rows of the first, second and (padded) last batch.
        record, example = records[i], source[i]
        assert int(record["record_index"]) == i
        pair = [
            images.decode_resized(example[k], 32, fast_jpeg=False).astype(np.float32) / 127.5 - 1
            for k in ("source_image", "edited_image")
        ]
        for suffix, flip in (("", False), ("_flipped", True)):
            batch = np.stack([p[:, ::-1] if flip else p for p in pair])
            mean, logvar = (np.asarray(a) for a in vae.encode(batch))
            expected = {
                "source_latent": mean[0],
                "edited_latent_mean": mean[1],
                "edited_latent_logvar": logvar[1],
            }
            for name, value in expected.items():
                np.testing.assert_allclose(record[name + suffix], value, rtol=1e-5, atol=1e-5, err_msg=name)
        texts = [example["instruction"].decode(), pipeline.feedback_text(example["reward_texts"])]
        hidden, pooled = (np.asarray(a) for a in text_encoder(tokenizer(texts)))
        np.testing.assert_allclose(record["encoder_hidden_states"], hidden[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(record["feedback_pooled"], pooled[1], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(record["reward_scores"], example["reward_scores"])


def test_the_empty_prompt_embedding_is_saved_with_the_cache(cache, encoders):
    _, text_encoder, tokenizer = encoders
    expected = np.asarray(text_encoder(tokenizer([""]))[0][0])
    empty = latent_cache.load_empty_prompt(cache)
    assert empty.dtype == np.float32 and empty.shape == (77, 32)
    np.testing.assert_allclose(empty, expected, rtol=1e-6, atol=1e-6)


def test_flipped_latents_differ_from_flipping_the_latents(cache):
    """The flipped pair is encoded, not derived: the VAE is not exactly flip-equivariant."""
    record = latent_cache.load_latent_source(cache)[0][0]
    assert not np.allclose(record["source_latent_flipped"], record["source_latent"][:, ::-1], atol=1e-6)


def test_float16_storage_is_within_the_rounding_bound_of_float32(model, cache, synthetic_data_dir, tmp_path):
    info = build(model, synthetic_data_dir, tmp_path / "float16", limit=24)
    assert (info["dtype"], info["num_examples"]) == ("float16", 24)
    half, _ = latent_cache.load_latent_source(tmp_path / "float16")
    full, _ = latent_cache.load_latent_source(cache)
    worst = 0.0
    for i in range(24):
        for name, value in half[i].items():
            expected = full[i][name]
            if name in ("reward_scores", "record_index"):
                np.testing.assert_array_equal(value, expected)
                continue
            assert value.dtype == np.float16, name
            error = np.abs(value.astype(np.float32) - expected)
            assert (error <= FLOAT16_RTOL * np.abs(expected) + FLOAT16_ATOL).all(), name
            worst = max(worst, float((error / np.maximum(np.abs(expected), 2.0**-14)).max()))
    assert 0 < worst <= FLOAT16_RTOL


def test_batches_hold_the_trainer_fields_as_float32(cache):
    batch = next(read(cache))
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        "source_latent": ((8, 16, 16, 4), np.float32),
        "edited_latent_mean": ((8, 16, 16, 4), np.float32),
        "edited_latent_logvar": ((8, 16, 16, 4), np.float32),
        "encoder_hidden_states": ((8, 77, 32), np.float32),
        "feedback_pooled": ((8, 32), np.float32),
        "reward_scores": ((8, 3), np.float32),
        "record_index": ((8,), np.int32),
    }


def test_the_same_seed_gives_the_same_batches_and_epochs_cover_the_cache(cache):
    first, again = list(read(cache)), list(read(cache, read_threads=4))
    assert len(first) == 12
    assert_batches_equal(first, again)
    indices = np.concatenate([b["record_index"] for b in first])
    assert sorted(indices[:48]) == sorted(indices[48:]) == list(range(48))
    other = next(read(cache, seed=4))
    assert not np.array_equal(first[0]["record_index"], other["record_index"])


def test_the_random_flip_picks_one_triplet_per_example(cache):
    records, _ = latent_cache.load_latent_source(cache)
    batch = next(read(cache, global_batch_size=48, num_epochs=1))
    flipped = []
    for row, index in enumerate(batch["record_index"]):
        record = records[index]
        # A symmetric image has equal plain and flipped latents, so all three fields decide together.
        matches = {
            suffix: all(np.array_equal(batch[k][row], record[k + suffix]) for k in latent_cache.LATENT_FIELDS)
            for suffix in ("", "_flipped")
        }
        assert any(matches.values()), index
        flipped.append(not matches[""])
    assert 0 < sum(flipped) < 48
    plain = next(read(cache, global_batch_size=48, num_epochs=1, flip=False))
    np.testing.assert_array_equal(plain["record_index"], batch["record_index"])
    assert all(
        np.array_equal(plain["source_latent"][row], records[i]["source_latent"])
        for row, i in enumerate(plain["record_index"])
    )


def test_restoring_the_iterator_state_mid_epoch_gives_exactly_the_remaining_batches(cache):
    iterator = read(cache)
    for _ in range(3):
        next(iterator)
    state = json.dumps(iterator.get_state())
    remaining = list(iterator)
    restored = read(cache)
    restored.set_state(json.loads(state))
    assert_batches_equal(list(restored), remaining)
    assert len(remaining) == 9


def test_worker_processes_give_the_same_batches_and_restore_exactly(cache):
    single = list(read(cache, num_epochs=1))
    iterator = read(cache, num_epochs=1, worker_count=2)
    head = [next(iterator) for _ in range(2)]
    state = iterator.get_state()
    tail = list(iterator)
    assert_batches_equal(head + tail, single)
    restored = read(cache, num_epochs=1, worker_count=2)
    restored.set_state(state)
    assert_batches_equal(list(restored), tail)


def test_process_shards_form_the_single_process_batches(cache):
    single = list(read(cache, num_epochs=1))
    shards = [list(read(cache, num_epochs=1, shard_index=i, shard_count=2)) for i in range(2)]
    for global_batch, part_0, part_1 in zip(single, *shards, strict=True):
        for key in global_batch:
            np.testing.assert_array_equal(np.concatenate([part_0[key], part_1[key]]), global_batch[key])


def test_reading_the_cache_does_not_import_tensorflow(cache):
    assert_iterates_without_tensorflow(
        f"""
        from rewardedit_jax.data import make_latent_dataset
        iterator = make_latent_dataset(
            {str(cache)!r}, global_batch_size=8, shard_index=0, shard_count=1, num_epochs=1, read_threads=2
        )
        """,
        batches=6,
    )


def test_a_missing_cache_gives_a_clear_error(tmp_path):
    with pytest.raises(latent_cache.LatentCacheError, match="no latent cache") as error:
        read(tmp_path / "absent")
    assert "\n" not in str(error.value) and "precompute" in str(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(latent_cache.LatentCacheError, match="no cache_info.json"):
        read(tmp_path / "empty")


def test_the_command_writes_a_cache_without_flips_that_refuses_to_flip(
    model, synthetic_data_dir, tmp_path, capsys
):
    out = tmp_path / "noflip"
    argv = ["--model", str(model), "--dataset", DATASET, "--data-dir", str(synthetic_data_dir)]
    argv += ["--out", str(out), "--resolution", "32", "--batch-size", "8", "--limit", "8", "--no-flips"]
    assert precompute_main(argv + ["--no-progress"]) == 0
    records, info = latent_cache.load_latent_source(out)
    assert (len(records), info["flips"], info["dtype"]) == (8, False, "float16")
    assert not any(name.endswith("_flipped") for name in records[0])
    with pytest.raises(latent_cache.LatentCacheError, match="without flips"):
        read(out)
    assert len(list(read(out, flip=False, num_epochs=1))) == 1
    assert precompute_main(argv) == 2  # OUT exists.
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--model": "absent-model"}, "no such model folder"),
        ({"--dataset": "no_such_dataset"}, "dataset 'no_such_dataset' not found"),
        ({"--split": "validation"}, "has no split 'validation'"),
    ],
)
def test_a_missing_model_or_dataset_gives_a_one_line_error(
    model, synthetic_data_dir, tmp_path, capsys, change, message
):
    options = {"--model": str(model), "--dataset": DATASET, "--data-dir": str(synthetic_data_dir)}
    options.update({k: str(tmp_path / v) if k == "--model" else v for k, v in change.items()})
    argv = [x for item in options.items() for x in item] + ["--out", str(tmp_path / "out")]
    assert precompute_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()
