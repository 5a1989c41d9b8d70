"""The `synthetic_edit` TFDS dataset builder (see synthetic_edit_dataset_builder.py)."""
