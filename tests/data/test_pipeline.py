"""The grain input pipeline: determinism, exact resumption, sharding, augmentation, global arrays, no TF."""

import json
import os
import subprocess
import sys
from pathlib import Path

import grain
import jax
import numpy as np
import pytest
from fixtures_data import assert_batches_equal, assert_iterates_without_tensorflow
from fixtures_train import free_port

from rewardedit_jax.data import pipeline, synthetic
from rewardedit_jax.data.tokenize import WordTokenizer

DATASET = "synthetic_edit/tiny"  # 48 train / 16 test examples, 32x32.
TEMPLATE_WORDS = " ".join(t for templates in synthetic.TEMPLATES.values() for t in templates).split()
TOKENIZER = WordTokenizer(
    [w for w in TEMPLATE_WORDS if "{" not in w]
    + list(synthetic.COLORS)
    + list(synthetic.SHAPES)
    + " ".join(synthetic.SLOTS).split()
)
WORKER = Path(__file__).with_name("multiprocess_shards_worker.py")


# make_dataset's options in these tests (the two-process test reads 1 epoch, seeded 5, in each process).
OPTIONS = dict(split="train", global_batch_size=8, resolution=32, seed=3, num_epochs=2, read_threads=0)


def make(data_dir, **kwargs):
    """This process's dataset (the whole split: one shard)."""
    one_shard = dict(data_dir=data_dir, tokenizer=TOKENIZER, shard_index=0, shard_count=1)
    return pipeline.make_dataset(DATASET, **{**OPTIONS, **one_shard, **kwargs})


def test_batches_have_the_training_fields_shapes_and_ranges(synthetic_data_dir):
    batch = next(make(synthetic_data_dir))
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        "source_image": ((8, 32, 32, 3), np.float32),
        "edited_image": ((8, 32, 32, 3), np.float32),
        "input_ids": ((8, 77), np.int32),
        "feedback_input_ids": ((8, 77), np.int32),
        "reward_scores": ((8, 3), np.float32),
        "record_index": ((8,), np.int32),
    }
    for key in ("source_image", "edited_image"):
        assert -1.0 <= batch[key].min() and batch[key].max() <= 1.0
    assert (batch["input_ids"][:, 0] == WordTokenizer.START).all()
    assert (batch["input_ids"] != WordTokenizer.UNKNOWN).all()


def test_the_same_seed_gives_the_same_batches_and_another_seed_another_order(synthetic_data_dir):
    first, again = list(make(synthetic_data_dir)), list(make(synthetic_data_dir, read_threads=4))
    assert len(first) == 12
    assert_batches_equal(first, again)
    other = list(make(synthetic_data_dir, seed=4))
    assert not np.array_equal(first[0]["record_index"], other[0]["record_index"])


def test_each_epoch_visits_every_example_once_in_a_new_order(synthetic_data_dir):
    batches = list(make(synthetic_data_dir))
    indices = np.concatenate([b["record_index"] for b in batches])
    epoch_1, epoch_2 = indices[:48], indices[48:]
    assert sorted(epoch_1) == sorted(epoch_2) == list(range(48))
    assert not np.array_equal(epoch_1, epoch_2)


def test_flip_is_shared_by_both_images_and_random_per_example(synthetic_data_dir):
    # In the test split the edited image is the target, so a flip of only one of them would show.
    kwargs = dict(
        split="test", global_batch_size=16, num_epochs=1, image_keys=("edited_image", "target_image")
    )
    flipped = next(make(synthetic_data_dir, **kwargs))
    plain = next(make(synthetic_data_dir, flip=False, **kwargs))
    np.testing.assert_array_equal(flipped["edited_image"], flipped["target_image"])
    np.testing.assert_array_equal(flipped["record_index"], plain["record_index"])
    is_flipped = [
        not np.array_equal(f, p) and np.array_equal(f, p[:, ::-1])
        for f, p in zip(flipped["edited_image"], plain["edited_image"])
    ]
    is_same = [np.array_equal(f, p) for f, p in zip(flipped["edited_image"], plain["edited_image"])]
    assert all(a or b for a, b in zip(is_flipped, is_same)) and 0 < sum(is_flipped) < 16


def test_feedback_text_joins_the_three_texts_with_semicolons():
    assert pipeline.feedback_text([b"None", "a", "b"]) == "None; a; b"


@pytest.mark.parametrize("read_threads", [0, 4])
def test_restoring_the_iterator_state_mid_epoch_gives_exactly_the_remaining_batches(
    synthetic_data_dir, read_threads
):
    iterator = make(synthetic_data_dir, read_threads=read_threads)
    for _ in range(3):
        next(iterator)
    state = json.dumps(iterator.get_state())  # What a checkpoint stores.
    remaining = list(iterator)
    restored = make(synthetic_data_dir, read_threads=read_threads)
    restored.set_state(json.loads(state))
    assert_batches_equal(list(restored), remaining)
    assert len(remaining) == 9


def test_worker_processes_give_the_same_batches_and_restore_exactly(synthetic_data_dir):
    single = list(make(synthetic_data_dir))
    iterator = make(synthetic_data_dir, worker_count=2)
    head = [next(iterator) for _ in range(3)]
    state = iterator.get_state()
    tail = list(iterator)
    assert_batches_equal(head + tail, single)
    restored = make(synthetic_data_dir, worker_count=2)
    restored.set_state(state)
    assert_batches_equal(list(restored), tail)


def test_iterator_state_round_trips_through_an_orbax_checkpoint(synthetic_data_dir, tmp_path):
    import orbax.checkpoint as ocp

    iterator = make(synthetic_data_dir, num_epochs=None)
    for _ in range(5):
        next(iterator)
    manager = ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",))
    manager.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
    expected = [next(iterator) for _ in range(8)]  # Crosses into the third epoch.

    restored = make(synthetic_data_dir, num_epochs=None)
    manager = ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",))
    manager.restore(
        manager.latest_step(), args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored))
    )
    assert_batches_equal([next(restored) for _ in range(8)], expected)


def test_process_shards_are_disjoint_cover_the_split_and_form_the_single_process_batches(synthetic_data_dir):
    single = list(make(synthetic_data_dir, num_epochs=1))
    shards = [list(make(synthetic_data_dir, num_epochs=1, shard_index=i, shard_count=2)) for i in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(single) == 6
    for global_batch, part_0, part_1 in zip(single, *shards):
        for key in global_batch:
            np.testing.assert_array_equal(np.concatenate([part_0[key], part_1[key]]), global_batch[key])
    indices = [np.concatenate([b["record_index"] for b in shard]) for shard in shards]
    assert not set(indices[0]) & set(indices[1])
    assert sorted(np.concatenate(indices)) == list(range(48))


def test_a_single_process_state_resumes_any_number_of_processes(synthetic_data_dir):
    """Local batch j of every process is part of global batch j, so the state means the same everywhere."""
    single = make(synthetic_data_dir, num_epochs=1)
    for _ in range(2):
        next(single)
    state, remaining = single.get_state(), list(single)
    shards = []
    for i in range(2):
        shard = make(synthetic_data_dir, num_epochs=1, shard_index=i, shard_count=2)
        shard.set_state(state)
        shards.append(list(shard))
    for global_batch, part_0, part_1 in zip(remaining, *shards, strict=True):
        np.testing.assert_array_equal(
            np.concatenate([part_0["record_index"], part_1["record_index"]]), global_batch["record_index"]
        )


def test_drop_remainder_gives_every_process_the_same_number_of_batches(synthetic_data_dir):
    # 48 examples, global batch 20: 2 full global batches, the last 8 examples are dropped.
    counts = [
        len(list(make(synthetic_data_dir, global_batch_size=20, num_epochs=1, shard_index=i, shard_count=2)))
        for i in range(2)
    ]
    assert counts == [2, 2]
    batches = list(make(synthetic_data_dir, global_batch_size=20, num_epochs=1, drop_remainder=False))
    assert [len(b["record_index"]) for b in batches] == [20, 20, 8]


def test_make_global_batch_places_process_rows_on_the_mesh(synthetic_data_dir):
    mesh = jax.make_mesh((1,), ("data",))
    batch = next(make(synthetic_data_dir))
    arrays = pipeline.make_global_batch(batch, mesh)
    assert arrays["source_image"].shape == (8, 32, 32, 3)
    assert arrays["source_image"].sharding.spec == jax.sharding.PartitionSpec(("data",))
    np.testing.assert_array_equal(np.asarray(arrays["reward_scores"]), batch["reward_scores"])


def test_a_custom_transform_replaces_the_image_transform(synthetic_data_dir):
    def keys_only(example, rng):
        del rng
        return {
            "record_index": np.int32(example[pipeline.INDEX_KEY]),
            "n": np.int32(len(example["instruction"])),
        }

    batch = next(make(synthetic_data_dir, transform=keys_only))
    assert set(batch) == {"record_index", "n"}


def test_two_jax_processes_read_disjoint_shards_that_cover_the_split(synthetic_data_dir, tmp_path):
    port = free_port()
    options = json.dumps({**OPTIONS, "data_dir": str(synthetic_data_dir), "seed": 5, "num_epochs": 1})
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(i), str(port), options, str(tmp_path / f"p{i}.json")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    results = [json.loads((tmp_path / f"p{i}.json").read_text()) for i in range(2)]
    assert [r["global_devices"] for r in results] == [4, 4]
    local = [set(r["local_indices"]) for r in results]
    assert not local[0] & local[1]
    assert sorted(local[0] | local[1]) == list(range(48))
    assert [len(r["local_indices"]) for r in results] == [24, 24]
    # Both processes see the same global batches, made of both shards.
    assert results[0]["global_indices"] == results[1]["global_indices"]
    assert sorted(sum(results[0]["global_indices"], [])) == list(range(48))
    assert all(r["global_shape"] == [8, 32, 32, 3] for r in results)


def test_reading_batches_does_not_import_tensorflow(synthetic_data_dir):
    assert_iterates_without_tensorflow(
        f"""
        from rewardedit_jax.data import make_dataset
        iterator = make_dataset(
            {DATASET!r}, "train", data_dir={str(synthetic_data_dir)!r}, global_batch_size=8, resolution=32,
            shard_index=0, shard_count=1, num_epochs=1, read_threads=2,
        )
        """,
        batches=6,
    )
