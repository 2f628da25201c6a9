"""Data readers (files -> tables), the protocol (tables -> tensors) and the LightningDataModule."""
