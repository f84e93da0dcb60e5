"""Pure numerical MPI package: MDF I/O, physics simulator, preprocessing, solvers,
quantification. No Django, no database, no settings: arrays and files in, arrays out."""

__version__ = "0.1.0"
