"""The TOML configuration: frozen, validated models and the loader."""
