"""Editing methods: each computes weight deltas and never mutates the model."""
