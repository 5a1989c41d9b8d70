"""The `real_edit` TFDS dataset builder (see real_edit_dataset_builder.py)."""
