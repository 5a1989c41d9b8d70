"""The `instruct_pix2pix` TFDS dataset builder (see instruct_pix2pix_dataset_builder.py)."""
