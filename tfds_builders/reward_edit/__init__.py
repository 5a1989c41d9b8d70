"""The `reward_edit` builder folder; dummy_data/ holds its test fixtures."""
