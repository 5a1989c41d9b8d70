"""The `reward_edit` TFDS dataset builder (see reward_edit_dataset_builder.py)."""
