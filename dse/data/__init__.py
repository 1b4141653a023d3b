"""Reference data shipped with dse; every file cites its original sources (README.md here)."""
