"""The model: NARM and its parts (GRU, dropout, losses, negatives), the rank metrics, the LightningModule."""
