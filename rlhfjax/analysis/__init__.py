"""Analyses the RLHF papers rely on: KL scaling, calibration, OOD detection, similarity."""
