"""Every training config key, with its default and meaning. Other configs start from this one, and the
trainer refuses a key that is not here.

    python -m rewardedit_jax.train --config configs/default.py --workdir DIR --config.key=value

(On its own this config trains nothing useful: it needs ``init_from`` and a dataset.)
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # --- run -------------------------------------------------------------------------------------------
    c.seed = 0  # model init (when random), noise, timesteps, dropout and the data order derive from it
    c.total_steps = 10_000  # optimizer steps
    c.batch_size = 64  # global batch per optimizer step (all processes, all accumulation micro-steps)
    c.grad_accum_steps = 1  # micro-batches per optimizer step; batch_size must divide evenly
    c.log_every_steps = 50  # metrics.jsonl / TensorBoard / W&B / console
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 3  # the last K checkpoints are kept
    c.async_checkpointing = True
    c.log_data_order = False  # append each step's example indices to DIR/data_order.jsonl (debugging)

    # --- metrics ---------------------------------------------------------------------------------------
    # DIR/metrics.jsonl and TensorBoard events in DIR/tensorboard/ are always written (by process 0).
    # Weights & Biases logging of the same scalars and images is optional (pip install wandb, or the wandb
    # extra; imported only when enabled). Its API key comes from the environment (WANDB_API_KEY, or
    # `wandb login`), never from the config.
    c.metrics = ml_collections.ConfigDict()
    c.metrics.wandb = ml_collections.ConfigDict()
    c.metrics.wandb.enabled = False
    c.metrics.wandb.project = "rewardedit-jax"
    c.metrics.wandb.entity = ""  # team or user ('' = the API key's default entity)
    c.metrics.wandb.name = ""  # the run's display name ('' = the workdir's folder name)
    c.metrics.wandb.group = ""  # groups runs in the UI, e.g. the seeds of one experiment
    c.metrics.wandb.tags = ""  # comma-separated
    c.metrics.wandb.notes = ""
    # online | offline (kept on disk; upload later with `wandb sync DIR`) | disabled; '' = $WANDB_MODE, else
    # online.
    c.metrics.wandb.mode = ""
    # Where wandb keeps its files (it writes only local ones): '' = $WANDB_DIR, else the workdir when it is
    # local (DIR/wandb/), else wandb's default (./wandb).
    c.metrics.wandb.dir = ""
    # The run id: '' = one made at the first start and kept in DIR/wandb_run.json, so a resumed training
    # continues the same W&B run.
    c.metrics.wandb.id = ""

    # --- model -----------------------------------------------------------------------------------------
    # A diffusers pipeline folder, a Flax model directory, or a training workdir (its latest checkpoint:
    # EMA weights when present). '' = random init from model.* below (tests, the demo).
    c.init_from = ""  # model folder, training workdir, or Hugging Face Hub id owner/name[@revision]
    c.init_from_ema = True  # when init_from is a training workdir, start from its EMA weights
    c.model = ml_collections.ConfigDict()
    c.model.in_channels = 8  # the IP2P U-Net: noisy latent (4) + source latent (4); 4-ch inits expand
    # diffusers-style configs used for random init when init_from is '' (JSON-like dicts).
    c.model.unet = ml_collections.ConfigDict()
    c.model.vae = ml_collections.ConfigDict()
    c.model.text_encoder = ml_collections.ConfigDict()
    # Tokenizer folder for random init. '' = a word tokenizer made for the run from the texts of data.name
    # (each word one token; rewardedit_jax/data/vocabulary.py), saved with the model in DIR/model, and
    # model.text_encoder's vocab_size and special token ids set from it.
    c.model.tokenizer = ""
    c.model.prediction_type = ""  # '' = the scheduler's (epsilon for SD 1.5); or epsilon / v_prediction
    # Overrides of the noise scheduler's config (diffusers DDPMScheduler keys, e.g. beta_schedule,
    # timestep_spacing), applied to the init_from scheduler or to SD 1.5's for random init, and saved with
    # the model so sampling and exports use them.
    c.model.scheduler = ml_collections.ConfigDict()
    c.compute_dtype = "bfloat16"  # activations; parameters and optimizer state stay float32
    c.remat = "none"  # rematerialization of U-Net blocks: none | blocks
    # Attention: auto = cuDNN fused attention on GPUs where the shapes allow it, XLA elsewhere (CPU, TPU);
    # xla | cudnn force one; auto_padded also pads the 77 text keys for cuDNN (a lever, benchmarks/NOTES.md).
    c.attention = "auto"
    # Device layout of the train state: auto = 4-D convolution kernels (with their Adam moments and EMA)
    # stored (O, H, W, I)-major on GPUs, cuDNN's filter layout, so optimizer updates need no transposes
    # (12% faster steps on an H100, benchmarks/RESULTS.md), row-major elsewhere; default | conv_ohwi force
    # one. Shapes, checkpoints and exports do not change.
    c.state_layout = "auto"

    # --- reward conditioning (Gu et al. 2024) -----------------------------------------------------------
    c.reward = ml_collections.ConfigDict()
    c.reward.enabled = False  # add/keep the reward modules and condition on the dataset's rewards
    c.reward.dropout = 0.1  # dropout inside the latent cross-attention (official: 0.1)

    # --- diffusion training ------------------------------------------------------------------------------
    c.cfg_dropout_prob = 0.05  # p: text dropped for u < 2p, source image dropped for p <= u < 3p
    # Training timesteps: uniform over [0, T) (official); a share high_noise_fraction of them is drawn from
    # [high_noise_from, T) instead, where only the instruction tells what the result looks like.
    c.timesteps = ml_collections.ConfigDict()
    c.timesteps.high_noise_fraction = 0.0
    c.timesteps.high_noise_from = 900

    # --- optimizer (AdamW, official values) --------------------------------------------------------------
    c.learning_rate = 5e-5
    c.lr_schedule = "constant"  # constant | cosine (to 0 at total_steps)
    c.warmup_steps = 0
    c.adam_b1 = 0.9
    c.adam_b2 = 0.999
    c.adam_eps = 1e-8
    c.weight_decay = 1e-2
    c.grad_clip_norm = 1.0
    c.ema = ml_collections.ConfigDict()
    c.ema.enabled = True
    c.ema.max_decay = 0.9999  # decay = min(max_decay, (1 + step) / (10 + step)), as diffusers' EMAModel

    # --- data --------------------------------------------------------------------------------------------
    c.data = ml_collections.ConfigDict()
    c.data.name = "reward_edit"  # a built TFDS dataset name[/config], or a prepared dataset directory
    c.data.data_dir = ""  # '' = $TFDS_DATA_DIR, else TFDS's default (~/tensorflow_datasets)
    c.data.split = "train"
    c.data.resolution = 256
    c.data.latent_cache = ""  # a latent-cache directory (rewardedit_jax.data.precompute) instead of images
    c.data.worker_count = 0  # grain worker processes per host (0 = threads in the main process)
    c.data.read_threads = 8
    c.data.fast_jpeg = True  # reduced-scale JPEG decode (1% pixel difference, 2.8x faster)
    c.data.flip = True  # random horizontal flips (official); off for data whose text says left/right

    # --- evaluation during training (rewardedit_jax/training/evals.py, docs/evaluation.md) -----------------
    # Named evaluators run on the EMA weights at every multiple of their every_steps and at the last step;
    # their numbers go to metrics.jsonl / TensorBoard as eval/<name>/<metric>, their grid (source | edit |
    # reference) to TensorBoard and DIR/eval/<step>/<name>/. Empty: no evaluation. An entry, e.g.
    #   c.evals.oracle = dict(type="oracle", every_steps=400, data="synthetic_edit/16px", steps=10)
    # has these keys (defaults in brackets):
    #   type            oracle (synthetic_edit's ground-truth judge: <perspective>_yes, <perspective>_score)
    #                   | reference (l1, l2; clip_i, clip_t with clip_model; dino with dino_model)
    #                   | gpt (the LVLM judge, project protocol; needs OPENAI_API_KEY)       [required]
    #   every_steps     evaluate every N optimizer steps (> 0), and at the last step          [required]
    #   data            the benchmark: synthetic_edit[/CONFIG] or real_edit, its test split  [required]
    #   data_dir        where it is built ['' = data.data_dir, else $TFDS_DATA_DIR]
    #   num_edits       the first N edits of the split [16]
    #   steps, text_guidance, image_guidance, scheduler   sampler settings [30, 7.5, 1.5, euler_ancestral]
    #   seed            edit i is seeded with seed + i, as `evaluate` does [42]
    #   resolution      long side of the fitted sources [0 = native for synthetic_edit; 512 is real_edit's]
    #   batch_size      edits per device per sampler call [8]
    #   dtype           sampler dtype: auto (float32 on CPU, else bfloat16) | float32 | bfloat16 [auto]
    #   clip_model, dino_model    reference: local transformers CLIP / DINO folders ['' = off]
    #   judge_model, judge_base_url   gpt: model and OpenAI-compatible endpoint ['' = the judge's defaults]
    c.evals = ml_collections.ConfigDict()

    # --- parallelism -------------------------------------------------------------------------------------
    # Mesh sizes within a slice (a TPU slice; elsewhere all devices); -1 = all remaining devices. The
    # batch is split over (data, fsdp); parameters and optimizer state are sharded by the logical-axis
    # rules below. jax's mesh_utils lays the axes on the interconnect (tensor innermost, on the fastest
    # links); a mesh the topology cannot hold is an error (docs/scaling.md).
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    # Sizes across slices (multi-slice TPU over the data-center network, DCN); -1 = the remaining slices.
    # Each mesh axis is the product of its DCN and in-slice sizes, the DCN part outermost. On devices
    # without slices (GPU clusters) a DCN size above 1 makes each process (host) a unit instead.
    c.mesh.dcn_data = -1
    c.mesh.dcn_fsdp = 1
    c.mesh.dcn_tensor = 1
    # Let mesh_utils split a physical torus axis over several mesh axes when the shape needs it.
    c.mesh.allow_split_physical_axes = False
    # Logical parameter axis -> mesh axis (or None = replicated). See rewardedit_jax/models/layers.py.
    # Convolution kernels split over fsdp (input channels) only: jax 0.10.2's SPMD partitioner computes
    # wrong input gradients for chained 3x3 convolutions whose kernels are split over fsdp and tensor at
    # once on a mesh where data, fsdp and tensor are all > 1 (docs/scaling.md); such rules are refused.
    c.sharding_rules = (
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("conv_in", "fsdp"),
        ("conv_out", None),
        ("norm", None),
        ("vocab", None),
        ("positions", None),
    )
    return c
