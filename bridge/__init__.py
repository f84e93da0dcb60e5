"""The scanner side of live injection monitoring: streams MPI frames to a live session.

Protocol "mpi-live/1" (docs/live-protocol.md). Needs numpy, h5py and the standard library
only: no Django, no project app (import-linter contract ``bridge-pure``), so it runs on a
scanner's acquisition computer. ``python -m bridge replay|follow --help``.
"""
