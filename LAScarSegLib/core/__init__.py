"""core: what every other part stands on, and nothing above it.

Errors, the `Volume` type (voxels with their geometry, never apart), reading and writing images,
resampling, the readers of the public data layouts, distance maps and the wall band in mm,
all-or-nothing output files, and the thread limits. Torch-free; imports nothing else of the library.
"""
