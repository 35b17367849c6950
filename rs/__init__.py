"""Randomized smoothing: statistics (`stats`), result files (`results`), the smoothed classifier
(`core`) and dataset-level certification (`certify`).

This file imports nothing, so `rs.stats` and `rs.results` (numpy and scipy only) can be used on a
machine without torch, as `visualize/` does.
"""
