"""What XLA says about a compiled program: memory per device, FLOPs per device, collective traffic.

Used by ``python -m rewardedit_jax.aot`` (does a train step fit a TPU slice, how much work is it), by
the trainer (TFLOP/s in the metrics) and by the benchmarks. All numbers are per device: an SPMD program
is compiled once for every device of the mesh.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "f8e4m3": 1, "f8e3m4": 1,
    "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
    "s32": 4, "u32": 4, "f32": 4,
    "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_SHAPE = re.compile(r"\b(" + "|".join(sorted(_BYTES, key=len, reverse=True)) + r")\[([0-9,]*)\]")
# "%name = <result shape> <opcode>(<operands>), attributes": the opcode of every collective, synchronous
# or the start of an asynchronous pair (the matching "-done" carries no new traffic).
_INSTRUCTION = re.compile(
    r"=\s*(?P<result>.*?)\s(?P<op>" + "|".join(COLLECTIVES) + r")(?P<start>-start)?\((?P<operands>[^)]*)\)"
)

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s*\(.*\)\s*->.*\{\s*$")


def compiled_memory(compiled) -> dict | None:
    """XLA's static memory analysis of a compiled executable, in bytes per device: arguments, outputs,
    aliased (outputs reusing donated arguments), temporaries, generated code, and ``total`` (what the
    device must hold at once: arguments + outputs - aliased + temporaries + code). None if unreported."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    out = {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
        "code_bytes": int(getattr(m, "generated_code_size_in_bytes", 0)),
    }
    out["total_bytes"] = (
        out["argument_bytes"]
        + out["output_bytes"]
        - out["alias_bytes"]
        + out["temp_bytes"]
        + out["code_bytes"]
    )
    return out


def cost_analysis(stage) -> Mapping[str, float]:
    """XLA's cost analysis of a ``Lowered`` or ``Compiled`` stage ({} if the backend reports none)."""
    try:
        analysis = stage.cost_analysis()
    except Exception:
        return {}
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    return dict(analysis or {})


def cost_flops(stage) -> float | None:
    """``flops`` of XLA's cost analysis (None if not reported)."""
    flops = cost_analysis(stage).get("flops")
    return None if flops is None else float(flops)


def _shape_bytes(text: str) -> list[int]:
    sizes = []
    for dtype, dims in _SHAPE.findall(text):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        sizes.append(n * _BYTES[dtype])
    return sizes


def collective_traffic(hlo_text: str) -> dict[str, dict[str, int]]:
    """``{kind: {"count", "bytes"}}`` of the collectives in optimized HLO text, per device.

    ``bytes`` is each collective's payload: the larger of its operands (summed) and its result (the
    largest element of a tuple result, since asynchronous starts return their operands too), i.e. the
    full array an all-reduce reduces, an all-gather gathers or a reduce-scatter scatters. What crosses the
    links is a fraction of it that depends on the group size and the algorithm. Instructions inside loop
    bodies are counted once (a gradient-accumulation scan repeats them per micro-batch).
    """
    traffic = {kind: {"count": 0, "bytes": 0} for kind in COLLECTIVES}
    computation = ""
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            computation = header.group(1)
            continue
        m = _INSTRUCTION.search(line)
        if not m:
            continue
        result = _shape_bytes(m.group("result"))
        operands = _shape_bytes(m.group("operands"))
        payload = max(max(result, default=0), sum(operands))
        op = m.group("op")
        if op == "all-reduce" and computation.startswith("all-reduce-scatter"):
            op = "reduce-scatter"  # the TPU compiler's reduce-scatter: an all-reduce fused with its slice
        entry = traffic[op]
        entry["count"] += 1
        entry["bytes"] += payload
    return traffic
