#!/usr/bin/env bash
# The GPU protocol of benchmarks/train_step.py and benchmarks/edit_latency.py on one H100 (or H200: the
# device line of each table says which), our JAX side and the diffusers PyTorch peer in the same run.
#
# Here, once: download wheels (Python 3.12, manylinux x86_64, no dependencies) for what the GPU image
# lacks into .whl/ (ignored by git), which the preflight installs:
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl diffusers importlib_metadata \
#     ml_collections grain array_record dm-tree more-itertools
# Carry no flax: the image's flax (0.12.10 on 2026-11-27) runs with its jax 0.11.2, and flax 0.12.8
# fails to import there (jax.experimental.hijax has no HiPrimitive). The preflight drops a carried flax
# that fails.
# Then, through the device tool (each stage is sized to one call of at most 600 s):
#   run(command="bash benchmarks/run_gpu.sh one", carry=[".whl"], timeout_s=600)    # one session's numbers
#   run(command="bash benchmarks/run_gpu.sh core", carry=[".whl"], timeout_s=600)   # the headline numbers
#   run(command="bash benchmarks/run_gpu.sh more", carry=[".whl"], timeout_s=600)   # 512 px, compile peer, levers
# Without the device tool: OUT=some/dir bash benchmarks/run_gpu.sh core
#
# Stages (each python run gets what is left of BUDGET_S; a side that runs out is reported as timed out
# and the table still prints):
#   one:  what one 15-minute session can hold, the must-show comparisons first: train 256 px batch 64
#         (ours auto attention and state layout, torch.compile), edit 512 px batch 1 (ours, U-Net under
#         torch.compile), ours alone at batch 16 (the 560-edit throughput, if time is left). About
#         9.5 min.
#   core: train 256 px batch 64 (ours auto attention, eager, torch.compile); edit 512 px batch 1 (ours,
#         diffusers eager). About 8-9 min: the 15 min of device time of one session fit this stage.
#   more: train 512 px batch 16 (ours, eager, torch.compile); edit batch 1 and 8 (ours, eager, U-Net
#         under torch.compile); levers at 256/64 (ours only): cuDNN cross-attention through padded
#         keys (auto_padded, profiled), xla attention, remat,
#         --xla_gpu_enable_triton_gemm=false. Needs a second session (or a machine without the limit).
#   diag: where our train step's time goes: ours at 256 px batch 64 with the kernel profile (device ms by
#         category, every kernel with its HLO op in the JSON) and the optimized HLO (hlo_auto.txt.gz),
#         then the same with --group-norm channel_sums (hlo_gn.txt.gz). About 8-9 min.
#   levers: ours at 256 px batch 64, profiled: the trainer's default (state layout conv_ohwi on GPUs),
#         + convolutions inside CUDA graphs (--xla_gpu_enable_command_buffer=+CONVOLUTION: fewer host
#         gaps between graph launches), + cuDNN cross-attention (auto_padded). Later variants are
#         skipped when the budget runs out. About 9.5 min.
#   edit_speed: the editing-speed comparison and its levers in one call (about 9.5 min): ours at 512 px
#         batch 1 (profiled), 16 and 32 (the 560-edit throughput; the first image of each batch compared
#         with batch 1's); the diffusers pipeline with the U-Net under torch.compile at batch 1 (12 timed
#         edits after its compile); ours at batch 1 with convolutions and the sampling loop inside CUDA
#         graphs (--xla_gpu_enable_command_buffer=+CONVOLUTION,+WHILE,+CONDITIONAL); ours at batch 1
#         with cuDNN cross-attention (auto_padded); ours at 512x384 (a 4:3 photo after the fit) batch 32.
#   peer_profile: the torch.compile side alone, profiled; about 2.5 min (a warm machine's second call).
#   smoke: the tiny CPU-mode runs on the GPU machine (wheels and imports), about 1 min.
# Outputs under $OUT: one JSON per benchmark run, log.txt (everything), env.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:-core}
OUT=${OUT:-$PWD/gpu_out}
BUDGET_S=${BUDGET_S:-570}
mkdir -p "$OUT"
start=$(date +%s)
exec > >(tee -a "$OUT/log.txt") 2>&1

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.90  # JAX sides only; each side is its own process
CACHE=${CACHE-/tmp/rewardedit_jax_cache}    # survives between calls while the machine stays warm; CACHE= disables

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import jax, flax, torch, diffusers, transformers; print('jax', jax.__version__, 'flax', \
flax.__version__, 'torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', \
transformers.__version__); print(jax.devices())"
  git rev-parse HEAD 2>/dev/null || echo "commit: not a git checkout"
} | tee "$OUT/env.txt"

left() { echo $((BUDGET_S - ($(date +%s) - start))); }

CAP_S=${CAP_S:-}  # optional: at most this many seconds for the next bench (then unset it)

bench() {  # bench NAME MIN_SECONDS SCRIPT ARGS...: run if at least MIN_SECONDS of the budget are left
  local name=$1 need=$2 script=$3
  shift 3
  local remaining
  remaining=$(left)
  if [[ -n $CAP_S ]] && ((remaining > CAP_S)); then remaining=$CAP_S; fi
  CAP_S=
  if ((remaining < need)); then
    echo "### skipped $name: ${remaining}s left of ${BUDGET_S}s (needs ~${need}s)"
    return 0
  fi
  echo "### $name: python3 benchmarks/$script $* (${remaining}s left)"
  # The benchmark stops starting sides when its budget is spent; timeout is only the backstop.
  local cache=()
  if [[ -n $CACHE ]]; then cache=(--cache-dir "$CACHE"); fi
  timeout "$((remaining + 20))" python3 "benchmarks/$script" "$@" ${cache[@]+"${cache[@]}"} \
    --budget-s "$remaining" --json "$OUT/$name.json"
  echo "### $name: exit $? after $(($(date +%s) - start))s"
}

preflight() {  # one jitted forward of a tiny U-Net on the GPU; falls back to the image's flax if ours fails
  local check='import jax, jax.numpy as jnp, flax
from rewardedit_jax.models.unet import UNetConfig, build_unet
from rewardedit_jax.models.layers import fill_random_
cfg = UNetConfig.from_diffusers(dict(block_out_channels=[32], cross_attention_dim=32, attention_head_dim=4,
    down_block_types=["CrossAttnDownBlock2D"], up_block_types=["CrossAttnUpBlock2D"], layers_per_block=1,
    norm_num_groups=32, in_channels=8, out_channels=4))
u = fill_random_(build_unet(cfg, dtype=jnp.bfloat16, abstract=True), seed=0)
y = jax.jit(lambda x, t, c: u(x, t, c))(jnp.ones((2, 8, 8, 8)), jnp.array([10, 500]), jnp.ones((2, 77, 32)))
assert bool(jnp.isfinite(y).all()), "non-finite"
print("preflight ok:", jax.default_backend(), jax.devices()[0].device_kind, "flax", flax.__version__)'
  if python3 -c "$check"; then return 0; fi
  if [[ -d /tmp/site/flax ]]; then
    echo "### preflight failed with the carried flax; retrying with the image's flax"
    rm -rf /tmp/site/flax /tmp/site/flax-*.dist-info
    python3 -c "$check" && return 0
  fi
  echo "### preflight failed: not running the benchmarks"
  exit 1
}

case "$stage" in
  one)  # the must-show numbers of one 15-minute session, most important first
    preflight
    # No profile: with it the torch.compile side outgrew its share (2026-11-27, second session). Ours uses
    # the trainer's default state layout (conv_ohwi on GPUs) and the known FLOP count.
    CACHE= CAP_S=370 bench train256 120 train_step.py --resolution 256 --batch 64 --attention auto \
      --skip-eager --steps 5 --warmup 2 --model-flops 32.79
    CAP_S=170 bench edit512 90 edit_latency.py --resolution 512 --batch 1 --attention auto --skip-eager
    bench edit512_b16 60 edit_latency.py --resolution 512 --batch 16 --iters 3 --attention auto --skip-torch
    ;;
  diag)  # where our training step's time goes: kernel profile and optimized HLO, and one GroupNorm lever
    CACHE=  # a fresh machine has nothing cached, and writing a large executable costs time
    preflight
    CAP_S=280 bench train256_auto 150 train_step.py --resolution 256 --batch 64 --attention auto --skip-torch \
      --steps 5 --warmup 2 --profile 3 --model-flops 32.79 --dump-dir "$OUT" --dump-tag auto
    bench train256_gn 150 train_step.py --resolution 256 --batch 64 --attention auto --group-norm channel_sums \
      --skip-torch --steps 5 --warmup 2 --profile 3 --model-flops 32.79 --dump-dir "$OUT" --dump-tag gn
    ;;
  levers)  # the next levers after the state layout (NOTES.md section 6), ours at 256/64, profiled
    CACHE=
    # Autotuning results of one variant's fusions serve the next variant's identical fusions.
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_per_fusion_autotune_cache_dir=/tmp/xla_autotune_cache"
    common=(train_step.py --resolution 256 --batch 64 --skip-torch --steps 5 --warmup 2 --profile 3
      --model-flops 32.79)
    preflight
    # The trainer's default now (state layout auto = conv_ohwi on GPUs): the baseline of this stage.
    CAP_S=230 bench lever_base 120 "${common[@]}" --attention auto --dump-dir "$OUT" --dump-tag base
    XLA_FLAGS="$XLA_FLAGS --xla_gpu_enable_command_buffer=+CONVOLUTION" CAP_S=230 \
      bench lever_cmdconv 120 "${common[@]}" --attention auto
    XLA_FLAGS="$XLA_FLAGS --xla_gpu_enable_command_buffer=+CONVOLUTION" \
      bench lever_cmdconv_padded 120 "${common[@]}" --attention auto_padded
    ;;
  edit_speed)  # the editing-speed issue: same-run comparison at batch 1, the 560-edit batches, two levers
    CACHE=
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_per_fusion_autotune_cache_dir=/tmp/xla_autotune_cache"
    edit=(edit_latency.py --resolution 512 --attention auto)
    CAP_S=230 bench edit_ours 120 "${edit[@]}" --batch 1 16 32 --iters 4 --profile 2 --skip-torch
    CAP_S=130 bench edit_peer 100 "${edit[@]}" --batch 1 --iters 12 --skip-jax --skip-eager
    XLA_FLAGS="$XLA_FLAGS --xla_gpu_enable_command_buffer=+CONVOLUTION,+WHILE,+CONDITIONAL" CAP_S=75 \
      bench edit_cmdbuf 50 "${edit[@]}" --batch 1 --iters 8 --skip-torch
    CAP_S=70 bench edit_padded 50 edit_latency.py --resolution 512 --attention auto_padded --batch 1 \
      --iters 8 --skip-torch
    bench edit_384 45 edit_latency.py --size 512x384 --attention auto --batch 32 --iters 3 --skip-torch
    ;;
  peer_profile)  # the torch.compile side alone, profiled (a second call on the same warm machine)
    bench train256_compile 100 train_step.py --resolution 256 --batch 64 --skip-jax --skip-eager --steps 5 \
      --warmup 2 --profile 3
    ;;
  core)
    bench train256 120 train_step.py --resolution 256 --batch 64 --attention auto
    bench edit512 90 edit_latency.py --resolution 512 --batch 1 --attention auto --skip-compile
    ;;
  more)
    bench train512 120 train_step.py --resolution 512 --batch 16 --attention auto
    bench edit512_b8 120 edit_latency.py --resolution 512 --batch 1 8 --attention auto
    bench lever_auto_padded 90 train_step.py --resolution 256 --batch 64 --attention auto_padded --skip-torch \
      --profile 3
    bench lever_xla_attention 90 train_step.py --resolution 256 --batch 64 --attention xla --skip-torch
    bench lever_remat 90 train_step.py --resolution 256 --batch 64 --attention auto --remat --skip-torch
    XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_triton_gemm=false" \
      bench lever_no_triton_gemm 90 train_step.py --resolution 256 --batch 64 --attention auto --skip-torch
    ;;
  smoke)  # the CPU-mode smoke on the GPU machine: checks the wheels and imports in ~1 min
    bench smoke_train 30 train_step.py --tiny --skip-compile
    bench smoke_edit 30 edit_latency.py --tiny --skip-compile --batch 1
    ;;
  *)
    echo "usage: $0 one|diag|levers|edit_speed|peer_profile|core|more|smoke" >&2
    exit 2
    ;;
esac
echo "### done in $(($(date +%s) - start))s; results in $OUT"
