"""``python -m rewardedit_jax.data.precompute``: encode a built dataset once into a latent cache.

    python -m rewardedit_jax.data.precompute --model PATH --dataset reward_edit --split train \\
        --data-dir D --out OUT [--resolution 256] [--batch-size 16] [--no-flips] [--limit N] \\
        [--dtype float16|float32]

Writes VAE posterior moments of the edited images, posterior modes of the source images (of the
horizontally flipped pairs too, unless ``--no-flips``) and the text embeddings of the instructions and
feedback texts (`rewardedit_jax.data.latent_cache`, docs/data.md). The trainer reads OUT with
`make_latent_dataset` instead of the images. Errors are one line on stderr (exit 2).
"""

from __future__ import annotations

import argparse
import sys

from rewardedit_jax.io import check_creatable
from rewardedit_jax.platforms import quiet_library_logs

# The flags passed to rewardedit_jax.data.latent_cache.precompute as the keywords of the same names.
_PRECOMPUTE_OPTIONS = (
    "resolution batch_size flips limit dtype read_threads fast_jpeg overwrite progress".split()
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rewardedit_jax.data.precompute", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--model",
        required=True,
        help="diffusers pipeline folder, Flax model directory, or Hugging Face Hub id owner/name[@revision]",
    )
    parser.add_argument("--dataset", required=True, help="NAME[/CONFIG] in --data-dir, or a dataset folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--data-dir", default=None, help="the TFDS data_dir the dataset was built into")
    parser.add_argument("--out", required=True, help="latent cache folder to create")
    parser.add_argument("--resolution", type=int, default=256, help="image side before encoding")
    parser.add_argument("--batch-size", type=int, default=16, help="image pairs per encoder call")
    parser.add_argument("--no-flips", dest="flips", action="store_false", help="skip the flipped pairs")
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N examples")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="storage type")
    parser.add_argument("--read-threads", type=int, default=4, help="threads decoding images")
    parser.add_argument(
        "--fast-jpeg", action="store_true", help="reduced-scale JPEG decode (faster, ~1%% different)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_library_logs()
    from rewardedit_jax.convert.weights import ConversionError
    from rewardedit_jax.data.latent_cache import LatentCacheError, precompute
    from rewardedit_jax.io import PathError

    options = {name: getattr(args, name) for name in _PRECOMPUTE_OPTIONS}
    try:
        check_creatable(args.out, "--out")  # written after the whole dataset is encoded
        info = precompute(
            args.model, args.dataset, args.split, data_dir=args.data_dir, out_dir=args.out, **options
        )
    except (LatentCacheError, ConversionError, PathError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {info['num_examples']} examples of {info['dataset']} {info['split']} to {args.out} "
        f"(latents {info['latent_shape']}, text {info['text_length']}x{info['text_dim']}, {info['dtype']}, "
        f"flips {info['flips']}) in {info['encode_seconds']:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
