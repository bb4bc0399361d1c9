"""HF-facing model classes, one folder per family."""
