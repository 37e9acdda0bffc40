"""Just enough PNG decoding to count pixels of a screenshot (8-bit RGB/RGBA, not interlaced: what Chromium writes),
so that the HTML test needs no imaging library."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def read(path) -> np.ndarray:
    """(height, width, 3) uint8 RGB."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, f"unsupported PNG: depth {depth}, colour type {color}"
    channels = 3 if color == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.int64)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum per channel
            cur = np.cumsum(line.reshape(width, channels), axis=0).ravel() & 0xFF
        elif kind == 2:  # Up
            cur = (line + prev) & 0xFF
        else:  # Average, Paeth: each byte depends on the decoded one to its left
            cur = np.asarray(_sequential(kind, line.tolist(), prev.tolist(), channels), np.int64)
        out[y] = cur
        prev = cur
    return out.reshape(height, width, channels)[:, :, :3]


def _sequential(kind: int, line: list[int], prev: list[int], channels: int) -> list[int]:
    cur = [0] * len(line)
    for x, value in enumerate(line):
        a = cur[x - channels] if x >= channels else 0
        b = prev[x]
        if kind == 3:
            pred = (a + b) >> 1
        else:
            c = prev[x - channels] if x >= channels else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
        cur[x] = (value + pred) & 0xFF
    return cur


def count(image: np.ndarray, rgb: str, tolerance: int = 6) -> int:
    """Pixels within `tolerance` of the colour `#rrggbb`."""
    target = np.array([int(rgb[i:i + 2], 16) for i in (1, 3, 5)], np.int32)
    return int((np.abs(image.astype(np.int32) - target).max(axis=-1) <= tolerance).sum())
