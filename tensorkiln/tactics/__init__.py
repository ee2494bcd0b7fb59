"""Tactic enumeration and selection: which kernel serves each layer."""
