"""The configs the package itself needs, so that an installed wheel trains and runs the demo.

``default`` is the schema of every training key (the trainer checks configs against it), ``demo`` the offline
demo's model, ``sd15`` the Stable Diffusion 1.5 architecture and ``tpu`` the TPU slice layouts. The
user-facing config files in the repository's ``configs/`` build on these; a copy of one of them loads from
anywhere (``--config path/to/copy.py``) because it imports only this package.
"""
