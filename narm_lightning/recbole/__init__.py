"""Coming from RecBole: its checkpoints, config files and hyper.test search spaces, read safely."""
