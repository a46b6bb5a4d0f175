"""Placement studies: the per-layer ``place`` report, Pareto sweeps, plots and timeline traces."""
