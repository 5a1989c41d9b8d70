"""The configs the package itself needs, so that an installed wheel trains and runs the demo.

``default`` is the schema of every training key (the trainer checks configs against it), ``demo`` the offline
demo's model, ``sd15`` the Stable Diffusion 1.5 architecture and recipe, ``tpu`` the TPU slice layouts and
``components`` the component configs (U-Net, VAE, text encoder) built from their sizes. The
user-facing config files in the repository's ``configs/`` build on these; a copy of one of them loads from
anywhere (``--config path/to/copy.py``) because it imports only this package.
"""
