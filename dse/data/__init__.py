"""Reference data shipped with dse (copied from the project's shared/data; sources in README.md here)."""
