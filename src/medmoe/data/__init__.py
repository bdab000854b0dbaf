"""Datasets: manifests, public dataset layouts, splits, the torch Dataset and synthetic phantoms."""
