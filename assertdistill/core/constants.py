"""Constants shared by the data, loss and evaluation layers (defined here, below all of them)."""

IGNORE_INDEX = -100  # label id of padding positions: no cross-entropy, no KL (PyTorch's default ignore_index)
