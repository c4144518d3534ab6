"""infer: from an image to probabilities and masks.

Sliding windows with Gaussian blending, the network run on the model grid and back (torch),
finding the LA among other blood pools, and the LA and scar masks from the probabilities (the
masks are torch-free, so re-quantifying an edited LA needs no network).
"""
