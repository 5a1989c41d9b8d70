"""``python -m rewardedit_jax.convert``: import, export and check model weights.

    import SRC DST   diffusers folder (whole pipeline or a single unet/) -> Flax model directory
    export SRC DST   Flax model directory (or diffusers folder) -> diffusers folder
    check SRC        PyTorch vs converted Flax outputs on the same random inputs, per component

SRC (and ``--against``) may also be a Hugging Face Hub id, ``owner/name`` or ``owner/name@revision``,
downloaded into the Hugging Face cache first (:mod:`rewardedit_jax.hub`).
Errors are one line on stderr (exit 2); ``check`` exits 1 when a component is above tolerance.
Outputs are written to a temporary sibling directory and renamed into place only on success.
"""

from __future__ import annotations

import argparse
import sys
import time

from rewardedit_jax import hub
from rewardedit_jax.convert import pipeline
from rewardedit_jax.convert.weights import ConversionError, atomic_directory
from rewardedit_jax.io import PathError, check_creatable, to_path
from rewardedit_jax.platforms import quiet_library_logs


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_import(args) -> int:
    dst = to_path(args.dst)
    check_creatable(dst, "DST")
    found = hub.resolve(args.src)
    src = to_path(found.folder if found else args.src)
    t0 = time.perf_counter()
    pipeline.layout_of(src)  # fail on a bad source before creating anything
    with atomic_directory(dst, overwrite=args.overwrite) as tmp:
        components = pipeline.import_folder(
            src, tmp, in_channels=args.in_channels, log=_log, source=found.pinned if found else None
        )
    _log(f"imported {', '.join(components)} into {dst} in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_export(args) -> int:
    check_creatable(args.dst, "DST")
    src, dst = to_path(hub.local_folder(args.src)), to_path(args.dst)
    t0 = time.perf_counter()
    pipeline.layout_of(src)
    with atomic_directory(dst, overwrite=args.overwrite) as tmp:
        components = pipeline.export_folder(src, tmp, ema=not args.no_ema, log=_log)
    _log(f"exported {', '.join(components)} to {dst} in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_check(args) -> int:
    from rewardedit_jax.convert.parity import CHECKS

    src = to_path(hub.local_folder(args.src))
    components, layout = pipeline.layout_of(src)
    if pipeline.model_dir.is_model_dir(src):
        raise ConversionError(
            f"{src}: check needs the diffusers (PyTorch) folder as SRC; pass --against FLAX_DIR"
        )
    against = to_path(hub.local_folder(args.against)) if args.against else None
    if against is not None:
        against_components, against_layout = pipeline.layout_of(against)
    failed = False
    print(f"checking {src} (rtol {args.rtol:g})")
    for name in components:
        if name not in CHECKS:
            continue
        torch_folder = src if layout == "component" else src / name
        if against is not None:
            if name not in against_components:
                raise ConversionError(f"{against}: no {name} component to compare")
            flax_model, _ = pipeline.load_model_component(against, name, against_layout)
        else:
            flax_model, _ = pipeline.load_model_component(src, name, layout)
        for result in CHECKS[name](torch_folder, flax_model, seed=args.seed):
            print(result.line(args.rtol), flush=True)
            failed |= not result.ok(args.rtol)
    print("FAILED" if failed else "all components within tolerance")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rewardedit_jax.convert", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("import", help="diffusers folder -> Flax model directory")
    p.add_argument(
        "src", help="diffusers pipeline folder or a single unet/ folder, or a Hub id owner/name[@revision]"
    )
    p.add_argument("dst", help="Flax model directory to create")
    p.add_argument(
        "--in-channels",
        type=int,
        default=None,
        help="expand the U-Net's conv_in to this many input channels, extra ones zero (SD -> IP2P: 8)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("export", help="Flax model directory -> diffusers folder")
    p.add_argument("src", help="Flax model directory, training workdir or checkpoint, or diffusers folder")
    p.add_argument("--no-ema", action="store_true", help="export a workdir's raw weights instead of its EMA")
    p.add_argument("dst", help="diffusers folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("check", help="compare PyTorch and Flax outputs on random inputs")
    p.add_argument("src", help="diffusers folder (PyTorch reference) or a Hub id owner/name[@revision]")
    p.add_argument("--against", default=None, help="Flax model directory to compare (default: convert SRC)")
    p.add_argument("--rtol", type=float, default=1e-4, help="max relative error ||flax-torch||/||torch||")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_library_logs()
    try:
        return args.func(args)
    except PathError as e:  # ConversionError is one
        print(f"error: {e}", file=sys.stderr)
        return 2
