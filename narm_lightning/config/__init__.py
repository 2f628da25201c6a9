"""Configuration: the schema (every key, its default, help and rule), validation, YAML files read."""
