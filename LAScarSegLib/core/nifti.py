"""What ITK reads from a NIfTI file without an error, but wrongly: checked from the header first.

- A truncated file (a .nii.gz cut short, a .nii shorter than its header says): ITK fills the
  missing voxels with zeros, so a scan cut in half would be segmented as if it were whole (a
  hostile test got LA 324 mL against a truth of 70.5 mL and Utah I instead of IV).
- A zero, negative or non-finite voxel size (pixdim) beside a valid sform: ITK reads 1 mm with only
  its own warning on stderr (LA 214 mL against 72). The sform holds the real geometry, so the image
  takes it from there, with a warning; without a sform the file is refused.

Only NIfTI-1 single files (.nii, .nii.gz) are checked; other formats go to ITK as they are.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

HEADER_BYTES = 348
_CHUNK = 1 << 22


@dataclass(frozen=True)
class NiftiHeader:
    dims: tuple[int, ...]
    bitpix: int
    pixdim: tuple[float, float, float]
    vox_offset: float
    sform_code: int
    srow: tuple[tuple[float, float, float, float], ...]  # the sform's three rows (RAS mm)

    @property
    def data_bytes(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64)) * self.bitpix // 8

    @property
    def voxel_size_ok(self) -> bool:
        return all(math.isfinite(v) and v > 0 for v in self.pixdim[: min(3, len(self.dims))])

    def sform_lps(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]] | None:
        """(spacing, origin, direction) of a usable sform in ITK's LPS convention, or None."""
        if self.sform_code <= 0:
            return None
        a = np.array([r[:3] for r in self.srow], float)
        t = np.array([r[3] for r in self.srow], float)
        flip = np.diag([-1.0, -1.0, 1.0])  # RAS -> LPS
        a, t = flip @ a, flip @ t
        spacing = np.linalg.norm(a, axis=0)
        if not np.all(np.isfinite(a)) or np.any(spacing <= 0) or abs(np.linalg.det(a)) < 1e-12:
            return None
        direction = a / spacing
        return (tuple(float(v) for v in spacing), tuple(float(v) for v in t),
                tuple(float(v) for v in direction.ravel()))


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and (name.endswith(".nii") or name.endswith(".nii.gz"))


def _parse(raw: bytes) -> NiftiHeader | None:
    """The fields this module needs, in the file's byte order; None for a header that is not NIfTI-1."""
    for order in "<>":
        if len(raw) >= HEADER_BYTES and struct.unpack_from(order + "i", raw, 0)[0] == HEADER_BYTES:
            dim = struct.unpack_from(order + "8h", raw, 40)
            ndim = dim[0]
            if not 1 <= ndim <= 7:
                return None
            pixdim = struct.unpack_from(order + "8f", raw, 76)
            return NiftiHeader(dims=tuple(max(0, int(d)) for d in dim[1:ndim + 1]),
                               bitpix=int(struct.unpack_from(order + "h", raw, 72)[0]),
                               pixdim=(pixdim[1], pixdim[2], pixdim[3]),
                               vox_offset=float(struct.unpack_from(order + "f", raw, 108)[0]),
                               sform_code=int(struct.unpack_from(order + "h", raw, 254)[0]),
                               srow=tuple(struct.unpack_from(order + "4f", raw, 280 + 16 * i) for i in range(3)))
    return None


def _length(path: Path, what: str) -> tuple[bytes, int]:
    """The first HEADER_BYTES of the (decompressed) file and its whole decompressed length; a
    compressed stream that ends early is measured up to where it ends (the caller says truncated)."""
    if not path.name.lower().endswith(".gz"):
        with open(path, "rb") as fh:
            return fh.read(HEADER_BYTES), path.stat().st_size
    head, total = b"", 0
    unpack = zlib.decompressobj(wbits=31)  # gzip; streamed, so a stream cut short still counts what it holds
    try:
        with open(path, "rb") as fh:
            while packed := fh.read(_CHUNK):
                while packed:
                    out = unpack.decompress(packed)
                    head += out[: max(0, HEADER_BYTES - len(head))]
                    total += len(out)
                    packed = unpack.unused_data if unpack.eof else b""
                    if unpack.eof:  # another gzip member follows
                        unpack = zlib.decompressobj(wbits=31)
    except zlib.error as exc:
        raise InputError(f"{path}: {what} file is corrupt: its compressed data cannot be read ({exc})") from None
    return head, total


def check_nifti(path: Path, what: str = "image") -> NiftiHeader | None:
    """Refuse a truncated NIfTI file, and one whose voxel size is invalid with no sform to take it
    from; return the header (None when the file is not NIfTI-1: nothing checked)."""
    if not is_nifti(path):
        return None
    raw, length = _length(path, what)
    if len(raw) < HEADER_BYTES:
        raise InputError(f"{path}: {what} file is truncated: {length} bytes, less than a NIfTI header ({HEADER_BYTES})")
    header = _parse(raw)
    if header is None:
        return None
    expected = int(header.vox_offset) + header.data_bytes
    if length < expected:
        share = max(0.0, (length - header.vox_offset) / max(header.data_bytes, 1))
        raise InputError(f"{path}: {what} file is truncated: it holds {share:.0%} of the voxels its header declares "
                         f"({length} of {expected} bytes); copy the file again")
    if not header.voxel_size_ok and header.sform_lps() is None:
        raise InputError(f"{path}: {what} has an invalid voxel size {list(header.pixdim)} (pixdim) and no sform to "
                         "take the geometry from; fix the file's header")
    return header


def invalid_voxel_size_warning(path: Path, header: NiftiHeader, spacing: tuple[float, ...]) -> str:
    return (f"{path}: the voxel size in the header (pixdim {list(header.pixdim)}) is invalid; the geometry was "
            f"taken from the sform (spacing {[round(s, 4) for s in spacing]} mm)")
