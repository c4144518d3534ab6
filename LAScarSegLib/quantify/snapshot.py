"""`snapshot.png`: the LA surface coloured by scar probability, with a legend and the key numbers.

Two views (posterior, where most post-ablation scar is read, and anterior), rendered offscreen
with VTK. Without a display, EGL is used (Mesa llvmpipe on a CPU-only machine).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import vtk

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

#: Normal wall is blue-grey, scar yellow to red: the colours read at a glance, also in grey print.
SCAR_COLOURS = ((0.0, (0.55, 0.62, 0.75)), (0.5, (0.98, 0.85, 0.25)), (1.0, (0.85, 0.1, 0.05)))


def scar_lookup_table():
    ctf = vtk.vtkColorTransferFunction()
    for x, rgb in SCAR_COLOURS:
        ctf.AddRGBPoint(x, *rgb)
    lut = vtk.vtkLookupTable()
    lut.SetNumberOfTableValues(256)
    lut.SetRange(0.0, 1.0)
    for i in range(256):
        lut.SetTableValue(i, *ctf.GetColor(i / 255.0), 1.0)
    lut.Build()
    return lut


def render_snapshot(mesh, report: dict[str, Any], path: str | Path, size: tuple[int, int] = (1200, 700)) -> Path:
    """Render the mesh (LPS mm, with ScarProbability) into a PNG with legend, burden, stage and intended use."""
    lut = scar_lookup_table()
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(mesh)
    mapper.SetScalarModeToUsePointFieldData()
    mapper.SelectColorArray("ScarProbability")
    mapper.SetLookupTable(lut)
    mapper.SetScalarRange(0.0, 1.0)
    mapper.ScalarVisibilityOn()
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    bounds = mesh.GetBounds()
    centre = [(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2]
    for i, (label, sign) in enumerate((("posterior", 1.0), ("anterior", -1.0))):
        ren = vtk.vtkRenderer()
        ren.SetViewport(i * 0.5, 0.12, (i + 1) * 0.5, 0.92)
        ren.SetBackground(1, 1, 1)
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        ren.AddActor(actor)
        cam = ren.GetActiveCamera()
        cam.SetFocalPoint(*centre)
        cam.SetPosition(centre[0], centre[1] + sign * 500.0, centre[2])  # LPS: +y is posterior
        cam.SetViewUp(0, 0, 1)  # superior up
        ren.ResetCamera()
        cam.Zoom(1.3)
        title = vtk.vtkTextActor()
        title.SetInput(f"{label} view")
        title.GetTextProperty().SetColor(0.1, 0.1, 0.1)
        title.GetTextProperty().SetFontSize(18)
        title.SetPosition(10, 10)
        ren.AddViewProp(title)
        window.AddRenderer(ren)
    info = vtk.vtkRenderer()
    info.SetViewport(0, 0, 1, 1)
    info.SetBackground(1, 1, 1)
    info.SetLayer(0)
    window.SetNumberOfLayers(2)
    for r in list(_renderers(window)):
        r.SetLayer(1)
    window.AddRenderer(info)
    bar = vtk.vtkScalarBarActor()
    bar.SetLookupTable(lut)
    bar.SetTitle("scar probability")
    bar.SetOrientationToHorizontal()
    bar.SetNumberOfLabels(3)
    bar.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
    bar.GetPositionCoordinate().SetValue(0.62, 0.005)
    bar.SetWidth(0.36)
    bar.SetHeight(0.11)
    for prop in (bar.GetTitleTextProperty(), bar.GetLabelTextProperty()):
        prop.SetColor(0.1, 0.1, 0.1)
        prop.ShadowOff()
        prop.ItalicOff()
    info.AddViewProp(bar)
    scar = report.get("scar", {})
    la = report.get("la", {})
    header = (f"LA scar (LAScarSeg, model {report.get('model', {}).get('name', '?')} "
              f"{report.get('model', {}).get('version', '')}):  burden {scar.get('burden_surface_pct', float('nan')):.1f} % "
              f"of LA surface,  Utah stage {scar.get('utah_stage', '?')},  DECAAF {scar.get('decaaf_stage', '?')},  "
              f"LA volume {la.get('volume_ml', float('nan')):.0f} mL")
    for text, y, fontsize, colour in ((header, size[1] - 34, 18, (0.05, 0.05, 0.05)),
                                      (textwrap.fill(report.get("intended_use", ""), 150), size[1] - 72, 13, (0.6, 0.05, 0.05))):
        t = vtk.vtkTextActor()
        t.SetInput(text)
        t.GetTextProperty().SetFontSize(fontsize)
        t.GetTextProperty().SetColor(*colour)
        t.SetPosition(12, y)
        info.AddViewProp(t)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()
    window.Finalize()
    return Path(path)


def _renderers(window):
    rens = window.GetRenderers()
    rens.InitTraversal()
    for _ in range(rens.GetNumberOfItems()):
        yield rens.GetNextItem()
