"""The engine's kernels: the per-engine choice of attention backend and layer ops (select.py), their torch references, and Triton's."""
