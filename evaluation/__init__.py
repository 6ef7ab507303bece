"""Scoring the detectors: replays with ground truth (`lovekey evaluate`) and the oracle bound.

A top layer like the benchmarks: it may import the simulator, the detectors and storage, and
nothing below imports it.
"""
