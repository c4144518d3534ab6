"""synth: synthetic data with exact truth.

LGE phantoms (anatomy, appearance, scar), synthetic scar painted into real images, the phantom
statistics, and which phantom seeds serve training, validation and testing. Torch-free; imports
`core` only.
"""
