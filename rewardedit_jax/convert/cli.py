"""``python -m rewardedit_jax.convert``: import, export and check model weights.

    import SRC DST   diffusers folder (whole pipeline or a single unet/) -> Flax model directory
    export SRC DST   Flax model directory (or diffusers folder) -> diffusers folder
    check SRC        PyTorch vs converted Flax outputs on the same random inputs, per component

Errors are one line on stderr (exit 2); ``check`` exits 1 when a component is above tolerance.
Outputs are written to a temporary sibling directory and renamed into place only on success.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from rewardedit_jax.convert import model_dir, resolve_component
from rewardedit_jax.convert.unet import (
    load_diffusers_unet,
    load_flax_unet,
    save_diffusers_unet,
    save_flax_unet,
)
from rewardedit_jax.convert.weights import ConversionError, atomic_directory

COMPONENTS = ("unet",)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _source_components(src: Path) -> tuple[list[str], str]:
    """Components found under ``src`` and its layout (``pipeline`` or ``component``)."""
    if model_dir.is_model_dir(src):
        manifest = model_dir.read_manifest(src)
        return list(manifest["components"]), manifest.get("layout", "pipeline")
    if (src / "model_index.json").is_file() or any((src / c / "config.json").is_file() for c in COMPONENTS):
        found = [c for c in COMPONENTS if (src / c / "config.json").is_file()]
        if not found:
            raise ConversionError(f"{src}: the pipeline folder has none of the components {COMPONENTS}")
        return found, "pipeline"
    if (src / "config.json").is_file():
        return ["unet"], "component"
    if not src.exists():
        raise ConversionError(f"{src}: no such model folder")
    raise ConversionError(f"{src}: neither a diffusers folder nor a Flax model directory (no config.json)")


def _load(src: Path, component: str, **kwargs):
    folder, kind = resolve_component(src, component)
    if kind == "flax":
        return load_flax_unet(folder)
    return load_diffusers_unet(folder, **kwargs)


def cmd_import(args) -> int:
    src, dst = Path(args.src), Path(args.dst)
    components, layout = _source_components(src)
    t0 = time.perf_counter()
    loaded = {}
    for name in components:
        _log(f"reading {name} from {src}")
        kwargs = {"in_channels": args.in_channels} if name == "unet" and args.in_channels else {}
        loaded[name] = _load(src, name, **kwargs)
    with atomic_directory(dst, overwrite=args.overwrite) as tmp:
        for name, (model, config) in loaded.items():
            _log(f"writing {name} to {dst / name}")
            save_flax_unet(model, tmp / name, config)
        model_dir.write_manifest(tmp, list(loaded), source=str(src.absolute()), layout=layout)
    _log(f"imported {', '.join(loaded)} into {dst} in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_export(args) -> int:
    src, dst = Path(args.src), Path(args.dst)
    components, layout = _source_components(src)
    loaded = {name: _load(src, name) for name in components}
    with atomic_directory(dst, overwrite=args.overwrite) as tmp:
        for name, (model, config) in loaded.items():
            target = tmp if layout == "component" else tmp / name
            _log(f"writing {name} to {dst if layout == 'component' else dst / name}")
            save_diffusers_unet(model, target, config)
    _log(f"exported {', '.join(loaded)} to {dst}")
    return 0


def cmd_check(args) -> int:
    from rewardedit_jax.convert.parity import check_unet

    src = Path(args.src)
    components, _ = _source_components(src)
    against = Path(args.against) if args.against else None
    failed = False
    print(f"checking {src} (rtol {args.rtol:g})")
    for name in components:
        torch_folder, kind = resolve_component(src, name)
        if kind == "flax":
            raise ConversionError(
                f"{src}: check needs the diffusers (PyTorch) folder as SRC; pass --against FLAX_DIR"
            )
        flax_model, _ = _load(against, name) if against else _load(src, name)
        for result in check_unet(torch_folder, flax_model, seed=args.seed):
            print(result.line(args.rtol))
            failed |= not result.ok(args.rtol)
    print("FAILED" if failed else "all components within tolerance")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rewardedit_jax.convert", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("import", help="diffusers folder -> Flax model directory")
    p.add_argument("src", help="diffusers pipeline folder or unet/ folder")
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
    p.add_argument("src", help="Flax model directory (or diffusers folder)")
    p.add_argument("dst", help="diffusers folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("check", help="compare PyTorch and Flax outputs on random inputs")
    p.add_argument("src", help="diffusers folder (PyTorch reference)")
    p.add_argument("--against", default=None, help="Flax model directory to compare (default: convert SRC)")
    p.add_argument("--rtol", type=float, default=1e-4, help="max relative error ||flax-torch||/||torch||")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("absl").setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.func(args)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
