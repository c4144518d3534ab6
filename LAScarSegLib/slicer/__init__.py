"""slicer: the Slicer side (imports `slicer` MRML and `vtk`; never torch, qt or ctk).

The library's volumes and meshes as MRML nodes, the logic of CONTRACTS section 7 (its import path
stays `LAScarSegLib.logic`), the texts the module panel shows, the user's imported models, the
PyTorch installer's steps, and the checks shared by pytest and the module's self-test.
"""
