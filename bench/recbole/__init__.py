"""RecBole beside us: its epoch, its rows and its sampled evaluation, run in RecBole's own venv as ``python -m
bench.recbole.<name>`` from the checkout (so this project's modules import without installing it there)."""
