"""Input-pipeline throughput: examples/s per host core at 256 px from 512x512 JPEGs (the RewardEdit20K case).

Builds a `reward_edit` dataset from a generated manual directory (InstructPix2Pix folder layout, photo-like
512x512 JPEG pairs) with `tfds build`, then times `rewardedit_jax.data.make_dataset` reading it: decode,
resize to 256, flip, scale to [-1, 1], tokenize instruction and feedback, batch. The timed process is
pinned to one core and reads in its own thread (`read_threads=0`, no workers), so examples/s is per core;
`--threads N` also times N reading threads on N cores. Prints one JSON line per measurement and the number
of host cores needed to feed a GPU at `--target` images/s.

    python benchmarks/input_pipeline.py                       # 256 pairs, ~1 min on a laptop core
    python benchmarks/input_pipeline.py --tokenizer PATH      # with a real CLIP tokenizer folder
    python benchmarks/input_pipeline.py --latent-cache        # a generated 256px-equivalent latent cache
    python benchmarks/input_pipeline.py --latent-cache DIR    # a cache written by data.precompute

`--latent-cache` times `rewardedit_jax.data.make_latent_dataset` instead (read a record, pick the flipped or
plain latents, float16 -> float32, batch), the same way. Without DIR it writes a cache of `--pairs` random
records shaped like SD 1.5 at 256 px: latents 32x32x4 (with flips), text states 77x768 and pooled 768,
float16.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rewardedit_jax.data import fixtures, latent_cache, pipeline
from rewardedit_jax.data.tokenize import WordTokenizer
from rewardedit_jax.tokenizer import load_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
ALL_CORES = sorted(os.sched_getaffinity(0))


def write_manual_dir(root: Path, num_pairs: int, size: int, quality: int) -> float:
    """RewardEdit_20K.json + InstructPix2Pix folders of `size` JPEG pairs; returns the mean JPEG size (KB)."""
    rng = np.random.default_rng(0)
    images = [fixtures.jpeg_bytes(fixtures.photo_like_image(rng, size), quality) for _ in range(32)]
    rewards = {}
    for i in range(num_pairs):
        folder = f"{i:07d}"
        fixtures.write_ip2p_folder(
            root / "ip2p",
            folder,
            [str(1000 + i)],
            instruction="turn the sky into a starry night with a full moon",
            image_bytes=lambda seed, side, i=i: images[(2 * i + int(side)) % len(images)],
        )
        texts = ("There are no noticeable negative aspects.", "The car color changed.", "Slightly blurry.")
        rewards[folder] = fixtures.reward_entry([4.5, 3.0, 4.0], texts)
    (root / "RewardEdit_20K.json").write_text(json.dumps(rewards))
    return float(np.mean([len(b) for b in images]) / 1024)


def build(manual_dir: Path, data_dir: Path) -> None:
    tfds_cli = Path(sys.executable).with_name("tfds")
    command = [str(tfds_cli), "build", "tfds_builders/reward_edit", "--manual_dir", str(manual_dir)]
    command += ["--data_dir", str(data_dir), "--file_format", "array_record"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, capture_output=True)


def time_batches(iterator, args, cores: list[int], threads: int) -> tuple[dict, dict]:
    """Read ``args.warmup_batches`` untimed, then ``args.batches`` timed: (the last batch, the rate fields
    of a result: cores, read threads, examples/s in all and per core)."""
    for _ in range(args.warmup_batches):
        next(iterator)
    start = time.perf_counter()
    for _ in range(args.batches):
        batch = next(iterator)
    rate = args.batches * args.batch_size / (time.perf_counter() - start)
    return batch, {
        "cores": len(cores),
        "read_threads": threads,
        "examples_per_s": round(rate, 1),
        "examples_per_s_per_core": round(rate / len(cores), 1),
    }


def measure(data_dir: Path, args, tokenizer, *, threads: int, fast_jpeg: bool = True) -> dict:
    cores = ALL_CORES[: max(1, threads)]
    os.sched_setaffinity(0, cores)
    transform = pipeline.EditExampleTransform(args.resolution, tokenizer, flip=True, fast_jpeg=fast_jpeg)
    iterator = pipeline.make_dataset(
        "reward_edit",
        "train",
        data_dir=data_dir,
        global_batch_size=args.batch_size,
        shard_index=0,
        shard_count=1,
        num_epochs=None,
        read_threads=threads,
        transform=transform,
    )
    batch, rate = time_batches(iterator, args, cores, threads)
    assert batch["source_image"].shape == (args.batch_size, args.resolution, args.resolution, 3)
    return {
        "measure": "input_pipeline",
        "source": "jpeg",
        "resolution": args.resolution,
        "jpeg_decode": "draft" if fast_jpeg else "full",
        **rate,
    }


def write_synthetic_latent_cache(out: Path, num_examples: int, resolution: int) -> dict:
    """A latent cache of random records with SD 1.5's shapes at `resolution` (float16, with flips)."""
    rng = np.random.default_rng(0)
    side, text_length, text_dim = resolution // 8, 77, 768
    out.mkdir(parents=True)
    writer = latent_cache.CacheWriter(out)
    for i in range(num_examples):
        record = {}
        for suffix in ("", latent_cache.FLIPPED_SUFFIX):
            for name in latent_cache.LATENT_FIELDS:
                record[name + suffix] = rng.normal(0, 5, (side, side, 4)).astype(np.float16)
        record["encoder_hidden_states"] = rng.normal(0, 1, (text_length, text_dim)).astype(np.float16)
        record["feedback_pooled"] = rng.normal(0, 1, text_dim).astype(np.float16)
        record["reward_scores"] = rng.uniform(0, 5, 3).astype(np.float32)
        record["record_index"] = np.int32(i)
        writer.write(record)
    return writer.finish(
        {
            "dataset": "synthetic (random records, benchmark)",
            "split": "train",
            "source_num_examples": num_examples,
            "model_path": None,
            "resolution": resolution,
            "latent_shape": [side, side, 4],
            "text_length": text_length,
            "text_dim": text_dim,
            "dtype": "float16",
            "flips": True,
            "has_rewards": True,
            "has_feedback": True,
            "scaling_factor": 0.18215,
        }
    )


def measure_latent_cache(cache_dir: Path, args, *, threads: int) -> dict:
    cores = ALL_CORES[: max(1, threads)]
    os.sched_setaffinity(0, cores)
    info = latent_cache.read_info(cache_dir)
    iterator = latent_cache.make_latent_dataset(
        cache_dir,
        global_batch_size=args.batch_size,
        shard_index=0,
        shard_count=1,
        num_epochs=None,
        read_threads=threads,
        flip=info["flips"],
    )
    batch, rate = time_batches(iterator, args, cores, threads)
    assert batch["source_latent"].shape == (args.batch_size, *info["latent_shape"])
    return {
        "measure": "input_pipeline",
        "source": "latent_cache",
        "resolution": info["resolution"],
        "latent_shape": info["latent_shape"],
        "text_states": [info["text_length"], info["text_dim"]],
        "dtype": info["dtype"],
        "flips": info["flips"],
        **rate,
    }


def run_latent_cache(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.latent_cache == "synthetic":
            cache_dir = Path(args.workdir or tmp) / "latent_cache"
            if not cache_dir.exists():
                start = time.perf_counter()
                write_synthetic_latent_cache(cache_dir, args.pairs, args.resolution)
                print(
                    f"wrote a synthetic latent cache of {args.pairs} examples in "
                    f"{time.perf_counter() - start:.1f} s",
                    file=sys.stderr,
                )
        else:
            cache_dir = Path(args.latent_cache)
        results = [measure_latent_cache(cache_dir, args, threads=0)]
        results += [measure_latent_cache(cache_dir, args, threads=t) for t in args.threads]
        for result in results:
            print(json.dumps(result))
        per_core = results[0]["examples_per_s_per_core"]
        print(
            f"{per_core:.0f} examples/s per core from the latent cache; {args.target:.0f} images/s needs "
            f"{math.ceil(args.target / per_core)} host core(s)",
            file=sys.stderr,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=256, help="image pairs in the generated dataset")
    parser.add_argument("--source_size", type=int, default=512, help="side of the stored JPEGs")
    parser.add_argument("--jpeg_quality", type=int, default=90)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=24, help="timed batches per measurement")
    parser.add_argument("--warmup_batches", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="*", default=[], help="also time these thread counts")
    parser.add_argument("--tokenizer", default=None, help="CLIP tokenizer folder (default: a word stand-in)")
    parser.add_argument("--target", type=float, default=500.0, help="GPU images/s to feed")
    parser.add_argument("--workdir", default=None, help="keep the generated data here (default: temporary)")
    parser.add_argument(
        "--latent-cache",
        nargs="?",
        const="synthetic",
        default=None,
        metavar="DIR",
        help="time reading a latent cache instead (DIR, or a generated 256px-equivalent one)",
    )
    args = parser.parse_args()
    if args.latent_cache is not None:
        run_latent_cache(args)
        return

    tokenizer = (
        load_tokenizer(args.tokenizer) if args.tokenizer else WordTokenizer("turn the sky into".split())
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        data_dir = workdir / "tfds"
        if not (data_dir / "reward_edit").exists():
            kb = write_manual_dir(workdir / "manual", args.pairs, args.source_size, args.jpeg_quality)
            start = time.perf_counter()
            build(workdir / "manual", data_dir)
            print(
                f"built reward_edit: {args.pairs} pairs of {args.source_size}px JPEG (mean {kb:.0f} KB) "
                f"in {time.perf_counter() - start:.1f} s",
                file=sys.stderr,
            )
        results = [measure(data_dir, args, tokenizer, threads=0, fast_jpeg=fast) for fast in (True, False)]
        results += [measure(data_dir, args, tokenizer, threads=t) for t in args.threads]
        for result in results:
            result["tokenizer"] = "clip" if args.tokenizer else "word stand-in"
            print(json.dumps(result))
        per_core = results[0]["examples_per_s_per_core"]
        print(
            f"{per_core:.0f} examples/s per core at {args.resolution}px from {args.source_size}px JPEG; "
            f"{args.target:.0f} images/s needs {math.ceil(args.target / per_core)} host cores "
            f"(without the reduced-scale JPEG decode: "
            f"{math.ceil(args.target / results[1]['examples_per_s_per_core'])})",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
