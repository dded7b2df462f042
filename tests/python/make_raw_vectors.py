#!/usr/bin/env python3
"""Writes shmring/testdata/raw_vectors.json: test vectors of the raw-frame
ring (docs/ring.md, "Raw-frame ring"), computed with struct and zlib from the
definition in the docs, independently of the Go code.

    python3 tests/python/make_raw_vectors.py [OUT]
"""

import json
import os
import struct
import sys
import zlib

DESC = struct.Struct("<IIII")  # width, height, stride, reserved
HEADER = struct.Struct("<QQIHHII")
CODECS = {"rgba": 16, "bgra": 17, "nv12": 18, "i420": 19, "rgb24": 20}


def planes(codec, w, h, stride):
    """(offset, stride, rows) of each plane, offsets from the payload start."""
    off = DESC.size
    out = [(off, stride, h)]
    off += stride * h
    ch = (h + 1) // 2
    if codec == "nv12":
        out.append((off, stride, ch))
    elif codec == "i420":
        cs = (stride + 1) // 2
        out.append((off, cs, ch))
        off += cs * ch
        out.append((off, cs, ch))
    return out


def case(codec, w, h, stride):
    p = planes(codec, w, h, stride)
    last = p[-1]
    return {
        "codec": CODECS[codec], "name": codec, "width": w, "height": h, "stride": stride,
        "descriptor_hex": DESC.pack(w, h, stride, 0).hex(),
        "planes": [{"offset": o, "stride": s, "rows": r} for o, s, r in p],
        "payload_size": last[0] + last[1] * last[2],
    }


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "..", "shmring", "testdata", "raw_vectors.json")
    cases = [
        case("rgba", 1920, 1080, 7680), case("bgra", 640, 480, 2560 + 64), case("rgb24", 320, 180, 960),
        case("nv12", 1920, 1080, 1920), case("nv12", 5, 3, 6), case("i420", 1280, 720, 1280),
        case("i420", 5, 3, 5), case("i420", 7, 5, 8),
    ]
    invalid = [
        {"codec": 16, "width": 4, "height": 2, "stride": 15, "why": "rgba stride below 4*width"},
        {"codec": 20, "width": 4, "height": 2, "stride": 11, "why": "rgb24 stride below 3*width"},
        {"codec": 18, "width": 3, "height": 2, "stride": 3, "why": "nv12 stride below the UV row 2*ceil(width/2)"},
        {"codec": 19, "width": 0, "height": 2, "stride": 4, "why": "zero width"},
        {"codec": 21, "width": 4, "height": 4, "stride": 16, "why": "codec 21 is reserved"},
    ]
    # One whole raw-ring region: an I420 5x3 frame, sequence 1, CRC on.
    c = case("i420", 5, 3, 5)
    payload = bytearray(bytes.fromhex(c["descriptor_hex"]))
    payload += bytes((i * 7) & 0xFF for i in range(c["payload_size"] - DESC.size))
    region = bytearray(256)
    struct.pack_into("<Q", region, 8, HEADER.size + len(payload))
    HEADER.pack_into(region, 16, 42, 1, len(payload), 1, 19, zlib.crc32(payload) & 0xFFFFFFFF, 0)
    region[48:48 + len(payload)] = payload
    struct.pack_into("<Q", region, 0, 1)
    doc = {"layouts": cases, "invalid": invalid,
           "region": {"hex": region.hex(), "sequence": 1, "frame_id": 42, "codec": 19, "width": 5, "height": 3,
                      "stride": 5, "payload_size": len(payload)}}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
