"""Kernel implementations by target and op family. Selection among them lives in `tensorkiln.tactics`."""
