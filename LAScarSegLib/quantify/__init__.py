"""quantify: from masks to numbers a clinician reads.

The LA surface and the projection of scar onto it, burdens and stages, metrics against manual
labels (the paper's surface protocol), the classical baselines, the typed report of
CONTRACTS section 5, the one read-out function that builds it (for segment, re-quantify,
evaluate and the Slicer logic), and the snapshot. Torch-free.
"""
