"""train: training and exporting networks.

Loss terms (Eqs. 2-6), training targets and patches, recipes, the training loop made of named
steps, checkpoints, and export of a checkpoint as the TorchScript model file with its card.
"""
