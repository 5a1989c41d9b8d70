"""The `instruct_pix2pix` builder folder; dummy_data/ holds its test fixtures."""
