"""CUDA C++ kernel sources (as Python strings) and their thin CuPy launchers."""
