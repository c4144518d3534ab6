"""model: the network and its file.

The variants of the paper's Tables 1-2, the shared-encoder U-Net (torch), the model card (what a
model file must say about itself), the registry of shipped and imported models with their SHA-256,
and loading a model for inference. Imports only `core`.
"""
