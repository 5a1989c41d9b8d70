"""rewardedit-jax: multi-reward conditioned instruction-based image editing in JAX/Flax.

Layers, bottom to top: a module imports from its own layer and the layers below it, never from one above
(``tests/test_layers.py`` checks every import, those inside functions too). A name stands for the module
or the package and everything in it; the longest name that matches a module decides its layer.

1. models and I/O: platforms, io, hub, schedule, configs, models, judge, report, checkpoints, workdir
2. conversion and data: convert, data, tfds_builders, tokenizer, torch_compat, oracle, reference_metrics
3. training and sampling: sampling, training, parallel, evaluators
4. the tools: train, aot, edit, evaluate, label, demo, app, cli, config_cli, convert.cli, convert.__main__
"""

from rewardedit_jax import platforms as _platforms

__version__ = "0.1.0"

# Before any jax backend starts: an installed libtpu on a machine without a TPU would otherwise make
# every command probe for one (see platforms.py).
_platforms.skip_absent_tpu()
