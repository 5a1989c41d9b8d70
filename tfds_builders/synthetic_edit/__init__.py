"""The `synthetic_edit` builder folder."""
