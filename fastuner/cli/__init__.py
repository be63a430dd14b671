"""The fastuner command line (the composition root)."""
