"""Precision assignment, calibration and quantization."""
