"""Benchmarks and study scripts of narm-lightning, run from the checkout as ``python -m bench.<name>`` (the Makefile's
``make bench*`` targets); never imported by the package."""
