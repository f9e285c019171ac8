"""Runnable examples; see README.md in this folder."""
