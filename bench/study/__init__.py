"""The hyper-test study's tools: status, figures, the README section, the committed snapshot (``python -m
bench.study.<name>``)."""
