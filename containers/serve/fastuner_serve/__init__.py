"""fastuner multi-adapter inference server (see containers/serve/README.md)."""
