"""Distill test-assertion generators: data, codec, loss, metrics, training, plotting."""
