"""Images stored inside other files in Debian packages: Qt resource bundles (.rcc), zip archives, GIMP patterns
(.pat) and Jigzo puzzles (.pzl). The open world's scene catalog names them by container and member."""
from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from pathlib import Path

from PIL import Image

from core.errors import StampWorldError


def qt_rcc_member(path: str | Path, member: str) -> bytes:
    """One file of a Qt resource bundle (format versions 1-3; zlib-compressed or stored entries)."""
    d = Path(path).read_bytes()
    if d[:4] != b"qres":
        raise StampWorldError(f"{path} is not a Qt resource file")
    version, tree, data, names = struct.unpack(">IIII", d[4:20])
    entry = 14 if version == 1 else 22

    def name(offset: int) -> str:
        o = names + offset
        n = struct.unpack(">H", d[o:o + 2])[0]
        return d[o + 6:o + 6 + 2 * n].decode("utf-16-be")

    def find(index: int, prefix: str) -> bytes | None:
        o = tree + index * entry
        name_offset, flags = struct.unpack(">IH", d[o:o + 6])
        here = f"{prefix}/{name(name_offset)}" if index else prefix
        if flags & 2:  # a directory: its children are a contiguous run of entries
            count, first = struct.unpack(">II", d[o + 6:o + 14])
            for child in range(first, first + count):
                found = find(child, here)
                if found is not None:
                    return found
            return None
        if here != member:
            return None
        start = data + struct.unpack(">I", d[o + 10:o + 14])[0]
        blob = d[start + 4:start + 4 + struct.unpack(">I", d[start:start + 4])[0]]
        if flags & 4:
            raise StampWorldError(f"{path}: {member} is zstd-compressed, which this reader does not read")
        return zlib.decompress(blob[4:]) if flags & 1 else blob

    found = find(0, "")
    if found is None:
        raise StampWorldError(f"{path} holds no {member}")
    return found


def gimp_pattern(path: str | Path) -> Image.Image:
    """A GIMP pattern (.pat, version 1): a header, then raw pixels."""
    d = Path(path).read_bytes()
    header, _, width, height, depth = struct.unpack(">5I", d[:20])
    if d[20:24] != b"GPAT" or depth not in (1, 2, 3, 4):
        raise StampWorldError(f"{path} is not a GIMP pattern")
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[depth]
    return Image.frombytes(mode, (width, height), d[header:header + width * height * depth]).convert("RGB")


def jigzo_picture(path: str | Path) -> Image.Image:
    """The picture of a Jigzo puzzle, put together from its pieces (the file's own full-size copy has the
    jigsaw's outlines drawn on it)."""
    d = Path(path).read_bytes()
    jpegs = [m.start() for m in re.finditer(b"\xff\xd8\xff", d)]
    png = d.find(b"\x89PNG")
    if len(jpegs) < 2 or png < 0:
        raise StampWorldError(f"{path} is not a Jigzo puzzle")
    lines = d[:jpegs[0]].decode("latin1").split("\n")
    mask = Image.open(io.BytesIO(d[png:])).convert("RGBA").getchannel("A")
    texture = Image.open(io.BytesIO(d[jpegs[1]:])).convert("RGB")
    _, _, _, width, height = next(line for line in lines if line.startswith("image")).split()[:5]
    out = Image.new("RGB", (int(width), int(height)))
    for line in lines:
        if line.startswith("crop"):
            _, x, y, w, h, cx, cy, _, _, dx, dy = line.split()
            x, y, w, h, cx, cy, dx, dy = map(int, (x, y, w, h, cx, cy, dx, dy))
            out.paste(texture.crop((x, y, x + w, y + h)), (dx + 68 - cx, dy + 68 - cy), mask.crop((x, y, x + w, y + h)))
    return out


def open_image(path: str | Path, fmt: str | None = None, member: str | None = None) -> Image.Image:
    """An image file, or one inside a container (`fmt`: qt-rcc, zip, gimp-pat, jigzo-pzl-thumbnail), as RGB."""
    if fmt in (None, "file"):
        with Image.open(path) as im:
            return im.convert("RGB")
    if fmt == "qt-rcc":
        return Image.open(io.BytesIO(qt_rcc_member(path, member))).convert("RGB")
    if fmt == "zip":
        with zipfile.ZipFile(path) as z:
            return Image.open(io.BytesIO(z.read(member))).convert("RGB")
    if fmt == "gimp-pat":
        return gimp_pattern(path)
    if fmt == "jigzo-pzl-thumbnail":
        return jigzo_picture(path)
    raise StampWorldError(f"unknown image container {fmt!r} for {path}")
