"""Shared pytest fixtures: real MRML from the `slicer-core` wheel (see slicer_harness.py).

Fixtures
--------
mrml_harness (session)  `slicer_harness.MRMLHarness`: one scene, application logic and the
                        Colors, Volumes and Segmentations module logics for the whole session
                        (built on first use only; tests that do not ask for it never import slicer).
mrml (function)         the same harness with its scene cleared before and after the test, and
                        `slicer.mrmlScene` / `slicer.modules` set for the test only.
mrml_scene (function)   `mrml.scene`: a fresh (cleared) vtkMRMLScene with the logics attached.

Every MRML fixture skips its test, with the reason, when slicer-core is not installed.
"""

from __future__ import annotations

import os

# Before any test module can create a vtkRenderWindow: offscreen OpenGL through EGL (Mesa llvmpipe
# without a GPU), no X display needed. A value set by the user (OSMesa, X) is kept.
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mrml_harness():
    import slicer_harness  # imports slicer (about 2 s), so only when an MRML test runs

    if not slicer_harness.HAVE_SLICER_CORE:
        pytest.skip(slicer_harness.SLICER_CORE_MISSING)
    harness = slicer_harness.MRMLHarness()
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def mrml(mrml_harness):
    mrml_harness.clear()
    with mrml_harness.slicer_globals():
        yield mrml_harness
    mrml_harness.clear()


@pytest.fixture
def mrml_scene(mrml):
    return mrml.scene
