"""Render `Screenshots/LAScarSeg.png`: what the module puts in Slicer's 3D view, offscreen.

Not a picture of the Slicer GUI (the application cannot run here): the demo phantom goes through
`LAScarSegLogic.process` with the bundled model on a real slicer-core MRML scene, and the scene's
"LA surface" model is drawn by Slicer's own model displayable manager (its colour table, active
`Scar` scalar and range) from the front and the back, side by side, with a caption strip naming
what it shows. Run from the repository root:

    .venv/bin/python Testing/Python/make_screenshot.py [--out Screenshots/LAScarSeg.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT)]

import numpy as np  # noqa: E402

VIEW = (560, 520)
CAPTION_H = 84


def _caption(width: int, lines: list[str]) -> np.ndarray:
    """A white strip with `lines` of dark text, rendered by VTK offscreen (RGB uint8, top row first)."""
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    ren = vtk.vtkRenderer()
    ren.SetBackground(1, 1, 1)
    win = vtk.vtkRenderWindow()
    win.SetOffScreenRendering(1)
    win.SetSize(width, CAPTION_H)
    win.AddRenderer(ren)
    for i, text in enumerate(lines):
        actor = vtk.vtkTextActor()
        actor.SetInput(text)
        prop = actor.GetTextProperty()
        prop.SetFontSize(17 if i == 0 else 14)
        prop.SetBold(i == 0)
        prop.SetColor(0.1, 0.1, 0.1)
        actor.SetDisplayPosition(12, CAPTION_H - 26 - 22 * i)
        ren.AddViewProp(actor)
    win.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(win)
    grab.ReadFrontBufferOff()
    grab.Update()
    img = grab.GetOutput()
    w, h, _ = img.GetDimensions()
    rgb = vtk_to_numpy(img.GetPointData().GetScalars()).reshape(h, w, -1)[..., :3]
    win.Finalize()
    return rgb[::-1].copy()


def _write_png(rgb: np.ndarray, path: Path) -> None:
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk

    h, w, _ = rgb.shape
    img = vtk.vtkImageData()
    img.SetDimensions(w, h, 1)
    arr = numpy_to_vtk(np.ascontiguousarray(rgb[::-1]).reshape(-1, 3), deep=True)
    arr.SetNumberOfComponents(3)
    img.GetPointData().SetScalars(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(tmp))
    writer.SetInputData(img)
    writer.Write()
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "Screenshots" / "LAScarSeg.png"))
    ap.add_argument("--seed", type=int, default=0, help="phantom seed (0: the demo's)")
    args = ap.parse_args(argv)

    import slicer_harness as sh

    from LAScarSegLib.logic import LAScarSegLogic
    from LAScarSegLib.slicer.mrml import volume_to_node
    from LAScarSegLib.synth.phantom import make_phantom

    harness = sh.MRMLHarness()
    try:
        with harness.slicer_globals():
            ph = make_phantom(args.seed)
            node = volume_to_node(ph.image, "LGE phantom")
            la_node = volume_to_node(ph.la, "manual LA", labelmap=True)
            result = LAScarSegLogic().process(node, la_node, device="cpu")
            result.segmentation.GetDisplayNode().SetVisibility(False)
            with tempfile.TemporaryDirectory() as tmp:
                views = [sh.read_png(sh.render_scene_to_png(harness.scene, Path(tmp) / f"{v}.png", size=VIEW,
                                                            view_direction=v, app_logic=harness.app_logic,
                                                            show_segmentations=False, zoom=1.15))[..., :3]
                         for v in ("anterior", "posterior")]
            rep = result.report
            scar, la = rep["scar"], rep["la"]
            dice = rep.get("metrics", {}).get("la", {}).get("dice")
            lines = ["LAScarSeg: the LA surface coloured by projected scar (red) and normal wall (blue), "
                     "from the front (left) and the back (right)",
                     f"Synthetic LGE phantom (seed {args.seed}), model {rep['model']['name']} "
                     f"{rep['model']['version']}: burden {scar['burden_surface_pct']:.1f} % of the LA surface, "
                     f"Utah {scar['utah_stage']}, LA {la['volume_ml']:.0f} mL"
                     + (f", LA Dice {dice:.3f} against the phantom's truth" if dice is not None else ""),
                     "Offscreen render of the module's output through Slicer's model displayable manager "
                     "(slicer-core MRML), not a picture of the Slicer application"]
    finally:
        harness.close()
    pictures = np.concatenate(views, axis=1)
    _write_png(np.concatenate([pictures, _caption(pictures.shape[1], lines)], axis=0), Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
