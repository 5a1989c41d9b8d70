"""Input-pipeline throughput: examples/s per host core at 256 px from 512x512 JPEGs (the RewardEdit20K case).

Builds a `reward_edit` dataset from a generated manual directory (InstructPix2Pix folder layout, photo-like
512x512 JPEG pairs) with `tfds build`, then times `rewardedit_jax.data.make_dataset` reading it: decode,
resize to 256, flip, scale to [-1, 1], tokenize instruction and feedback, batch. The timed process is
pinned to one core and reads in its own thread (`read_threads=0`, no workers), so examples/s is per core;
`--threads N` also times N reading threads on N cores. Prints one JSON line per measurement and the number
of host cores needed to feed a GPU at `--target` images/s.

    python benchmarks/input_pipeline.py                       # 256 pairs, ~1 min on a laptop core
    python benchmarks/input_pipeline.py --tokenizer PATH      # with a real CLIP tokenizer folder

Not yet measured here: the latent-cache dataset (precomputed VAE latents and text embeddings).
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

from rewardedit_jax.data import fixtures, pipeline
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
    for _ in range(args.warmup_batches):
        next(iterator)
    start = time.perf_counter()
    for _ in range(args.batches):
        batch = next(iterator)
    elapsed = time.perf_counter() - start
    assert batch["source_image"].shape == (args.batch_size, args.resolution, args.resolution, 3)
    rate = args.batches * args.batch_size / elapsed
    return {
        "measure": "input_pipeline",
        "source": "jpeg",
        "resolution": args.resolution,
        "jpeg_decode": "draft" if fast_jpeg else "full",
        "cores": len(cores),
        "read_threads": threads,
        "examples_per_s": round(rate, 1),
        "examples_per_s_per_core": round(rate / len(cores), 1),
    }


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
    args = parser.parse_args()

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
