#!/usr/bin/env python3
"""Writes a moving I420 picture into the raw-frame ring with the Python
stdlib writer of tests/python/sdr_ring.py (the simulator's way of writing),
for the browser test that follows it through sdr_encoder to the page.

    python3 raw_writer.py PATH [--width W] [--height H] [--fps N] [--seconds S]

The picture: eight vertical colour bars scrolling left 8 pixels per frame
and a white box moving right 4 pixels per frame. frame_id is the commit time
in Unix ns. Runs until SIGTERM or for --seconds.
"""

import argparse
import os
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import sdr_ring  # noqa: E402

CODEC_I420 = 19
RAW_DESCRIPTOR = "<IIII"

# BT.601 limited-range Y, U, V of the bars.
BARS = [
    (180, 128, 128), (168, 44, 136), (145, 147, 44), (133, 63, 52),
    (63, 193, 204), (51, 109, 212), (28, 212, 120), (16, 128, 128),
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("path")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--size", type=int, default=64 << 20)
    a = p.parse_args()
    w, h = a.width, a.height
    cw, ch = (w + 1) // 2, (h + 1) // 2
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    # Two bar periods side by side, so that any shift is one slice.
    def bar_row(width, plane):
        bw = max(1, width // len(BARS))
        row = bytearray()
        for i in range(width):
            row.append(BARS[(i // bw) % len(BARS)][plane])
        return bytes(row) * 2

    y_row, u_row, v_row = bar_row(w, 0), bar_row(cw, 1), bar_row(cw, 2)
    ring = sdr_ring.Writer(a.path, a.size)
    desc = struct.pack(RAW_DESCRIPTOR, w, h, w, 0)
    period = 1.0 / a.fps
    start = time.monotonic()
    n = 0
    box = 48
    while not stop:
        n += 1
        shift = (n * 8) % w
        y = bytearray(y_row[shift:shift + w] * h)
        bx = (n * 4) % (w - box)
        by = h // 2 - box // 2
        for r in range(by, by + box):
            y[r * w + bx:r * w + bx + box] = b"\xeb" * box
        cs = shift // 2
        u = u_row[cs:cs + cw] * ch
        v = v_row[cs:cs + cw] * ch
        ring.write(time.time_ns(), n, 0, CODEC_I420, desc + bytes(y) + u + v)
        if a.seconds and time.monotonic() - start >= a.seconds:
            break
        delay = start + n * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    ring.close()
    print('{"frames": %d}' % n)


if __name__ == "__main__":
    main()
