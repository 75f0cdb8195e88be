"""Evaluation metrics and reports of trained models (one module per trainer)."""
