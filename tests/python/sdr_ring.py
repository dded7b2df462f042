#!/usr/bin/env python3
"""Writer and reader of the sdr-caddy shared-memory frame ring.

Written from docs/protocol.md and docs/ring.md with the Python standard library only
(mmap, struct, zlib), the way the simulator writes the ring, so that the Go
package shmring can be tested against an independent implementation.

Layout (little-endian): sequence u64 at 0 (stored last), write_len u64 at 8,
the 32-byte frame header at 16, the payload at 48.

    python3 sdr_ring.py write PATH [--size N] [--frames N] [--rate HZ] [--seed S]
                                   [--min-bytes N] [--max-bytes N] [--key-every N]
                                   [--no-crc] [--torn SECONDS]
    python3 sdr_ring.py read PATH [--until-seq N] [--timeout S] [--no-crc]
    python3 sdr_ring.py feed PATH [--size N] [--no-crc]

Payloads are deterministic: byte i of frame_seq s is (s*31 + i) & 0xff, so a
reader can tell a torn frame from a whole one without the CRC.

write prints one JSON summary line at the end. read prints one JSON line per
frame it accepts, then a JSON summary line (key "summary").

feed plays SDR_OS's simulator under a test's control: it opens the ring the
way the simulator's writer does (the file created or reused, the control
region zeroed, so that sequence and frame_seq start again from 1) and
follows commands, one JSON object per line on stdin, answering each with one
JSON line on stdout once it is done:

    {"cmd": "write", "n": N, "rate": HZ, "key": "first"|"none"|"all",
     "bytes": B, "hide_first": false}
        N frames, frame_seq going on, paced at HZ (0: back to back). With
        hide_first the first frame's commit is overwritten by the second
        before its sequence is stored: no reader can see it (a reader that
        missed a new run's first keyframe). Answers first and last frame_seq.
    {"cmd": "dup", "same": true|false}
        commits the last frame_seq again: the same bytes, or another payload.
    {"cmd": "restart"}
        a new writer run on the same file, as a restarted simulator: the
        control region zeroed, sequence and frame_seq from 1.
    {"cmd": "pauses", "times": T, "pause": S, "gap": S, "bytes": B}
        T times: nothing for pause seconds, then a keyframe, and gap seconds
        later a delta. Answers the keyframes' frame_seq.
    {"cmd": "quit"}

frame_id is (run << 32) | frame_seq, run counting restarts from 1.
"""

import argparse
import json
import mmap
import os
import random
import struct
import sys
import time
import zlib

OFF_SEQUENCE = 0
OFF_WRITE_LEN = 8
OFF_SLOT = 16
HEADER = struct.Struct("<QQIHHII")  # frame_id, frame_seq, size, flags, codec, crc32, reserved
HEADER_SIZE = HEADER.size  # 32
OFF_PAYLOAD = OFF_SLOT + HEADER_SIZE
U64 = struct.Struct("<Q")
FLAG_KEYFRAME = 0x0001
CODEC_H264 = 1

_PATTERN = bytes(range(256)) * 2


def payload_for(frame_seq, n):
    """The deterministic payload of frame_seq, n bytes long."""
    start = (frame_seq * 31) & 0xFF
    reps = n // 256 + 2
    block = (_PATTERN[start:start + 256]) * reps
    return block[:n]


class Writer:
    """Commits frames in the simulator's order: header and payload, then
    write_len, then sequence."""

    def __init__(self, path, size, crc=True, zero_header=True):
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.size = size
        self.crc = crc
        self.sequence = 0
        # A writer that starts zeroes the control region (the simulator's
        # writer leaves the slot as it was: zero_header=False).
        U64.pack_into(self.mm, OFF_SEQUENCE, 0)
        U64.pack_into(self.mm, OFF_WRITE_LEN, 0)
        if zero_header:
            self.mm[OFF_SLOT:OFF_PAYLOAD] = bytes(HEADER_SIZE)

    def put_slot(self, frame_id, frame_seq, flags, codec, payload):
        """Writes header + payload and write_len, without committing."""
        if len(payload) > self.size - OFF_PAYLOAD:
            raise ValueError("payload of %d bytes exceeds the ring" % len(payload))
        crc = zlib.crc32(payload) & 0xFFFFFFFF if self.crc else 0
        HEADER.pack_into(self.mm, OFF_SLOT, frame_id, frame_seq, len(payload), flags, codec, crc, 0)
        self.mm[OFF_PAYLOAD:OFF_PAYLOAD + len(payload)] = payload
        U64.pack_into(self.mm, OFF_WRITE_LEN, HEADER_SIZE + len(payload))

    def commit(self):
        self.sequence += 1
        U64.pack_into(self.mm, OFF_SEQUENCE, self.sequence)

    def write(self, frame_id, frame_seq, flags, codec, payload):
        self.put_slot(frame_id, frame_seq, flags, codec, payload)
        self.commit()

    def close(self):
        self.mm.close()


class Reader:
    """Follows the documented reader order."""

    def __init__(self, path, crc=True):
        self.path = path
        self.crc = crc
        self.mm = None
        self.last = 0
        self.torn = 0
        self.crc_failures = 0
        self.malformed = 0

    def attach(self):
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            size = os.fstat(fd).st_size
            if size < OFF_PAYLOAD:
                return False
            self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        return True

    def poll(self):
        """Returns (sequence, header tuple, payload) of a new verified frame, or None."""
        mm = self.mm
        s1 = U64.unpack_from(mm, OFF_SEQUENCE)[0]
        if s1 == 0 or s1 == self.last:
            return None
        wl = U64.unpack_from(mm, OFF_WRITE_LEN)[0]
        if wl < HEADER_SIZE or wl > len(mm) - OFF_SLOT:
            self.last = s1
            self.malformed += 1
            return None
        slot = mm[OFF_SLOT:OFF_SLOT + wl]
        s2 = U64.unpack_from(mm, OFF_SEQUENCE)[0]
        if s1 != s2:
            self.torn += 1
            return None
        self.last = s1
        hdr = HEADER.unpack_from(slot, 0)
        payload = slot[HEADER_SIZE:]
        if hdr[2] != wl - HEADER_SIZE:
            self.malformed += 1
            return None
        if self.crc and (zlib.crc32(payload) & 0xFFFFFFFF) != hdr[5]:
            self.crc_failures += 1
            return None
        return s1, hdr, payload


class Feeder:
    """The simulator's writer driven by commands (the feed subcommand)."""

    def __init__(self, path, size, crc):
        self.path, self.size, self.crc = path, size, crc
        self.run = 0
        self.w = None
        self.restart()

    def restart(self):
        if self.w is not None:
            self.w.close()
        # Like the simulator's ShmRingWriter: open or create the file, size
        # it, map it, zero the control region; the slot is left as it was.
        self.w = Writer(self.path, self.size, crc=self.crc, zero_header=False)
        self.frame_seq = 0
        self.run += 1
        self.last = None  # (flags, payload) of the last frame

    def frame(self, key, n, payload=None, commit=True):
        """Writes the next frame: header, payload, write_len, then sequence."""
        self.frame_seq += 1
        flags = FLAG_KEYFRAME if key else 0
        if payload is None:
            payload = payload_for(self.frame_seq, n)
        self.w.put_slot((self.run << 32) | self.frame_seq, self.frame_seq, flags, CODEC_H264, payload)
        if commit:
            self.w.commit()
        else:
            self.w.sequence += 1  # counted, never stored: the next commit overwrites it
        self.last = (flags, payload)
        return self.frame_seq

    def write(self, c):
        n, rate = int(c.get("n", 1)), float(c.get("rate", 0))
        key, size = c.get("key", "first"), int(c.get("bytes", 1000))
        period = 1.0 / rate if rate > 0 else 0.0
        t0 = time.monotonic()
        first = last = 0
        for i in range(n):
            if period and i:
                delay = t0 + i * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            k = key == "all" or (key == "first" and i == 0)
            hide = bool(c.get("hide_first")) and i == 0 and n > 1
            last = self.frame(k, size, commit=not hide)
            first = first or last
        return {"first": first, "last": last, "sequence": self.w.sequence}

    def dup(self, c):
        flags, payload = self.last
        if not c.get("same"):
            payload = bytes(b ^ 0xFF for b in payload)
        self.w.put_slot((self.run << 32) | self.frame_seq, self.frame_seq, flags, CODEC_H264, payload)
        self.w.commit()
        self.last = (flags, payload)
        return {"frame_seq": self.frame_seq, "sequence": self.w.sequence}

    def pauses(self, c):
        keys = []
        size = int(c.get("bytes", 1000))
        for _ in range(int(c.get("times", 1))):
            time.sleep(float(c.get("pause", 1.2)))
            keys.append(self.frame(True, size))
            time.sleep(float(c.get("gap", 0.033)))
            self.frame(False, size)
        return {"keys": keys, "last": self.frame_seq}


def cmd_feed(a):
    f = Feeder(a.path, a.size, crc=not a.no_crc)
    print(json.dumps({"ready": True, "run": f.run}), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            c = json.loads(line)
            op = c.get("cmd")
            if op == "quit":
                break
            if op == "write":
                out = f.write(c)
            elif op == "dup":
                out = f.dup(c)
            elif op == "restart":
                f.restart()
                out = {"run": f.run}
            elif op == "pauses":
                out = f.pauses(c)
            else:
                out = {"error": "unknown command %r" % op}
        except Exception as e:  # a bad command is answered, never fatal
            out = {"error": "%s: %s" % (type(e).__name__, e)}
        print(json.dumps(out), flush=True)
    f.w.close()
    return 0


def cmd_write(a):
    rnd = random.Random(a.seed)
    w = Writer(a.path, a.size, crc=not a.no_crc)
    max_bytes = min(a.max_bytes, a.size - OFF_PAYLOAD)
    if a.torn > 0:
        # Rewrite the slot continuously, each time a whole, self-consistent
        # frame, but advance the sequence only now and then: readers copying
        # the slot meanwhile see s1 == s2 over a changing slot.
        end = time.monotonic() + a.torn
        seq = 0
        rewrites = 0
        while time.monotonic() < end:
            seq += 1
            w.put_slot(seq, seq, FLAG_KEYFRAME if seq % 30 == 1 else 0, CODEC_H264,
                       payload_for(seq, rnd.randint(a.min_bytes, max_bytes)))
            rewrites += 1
            if seq % 50 == 0:
                w.commit()
        print(json.dumps({"summary": True, "rewrites": rewrites, "commits": w.sequence, "last_frame_seq": seq}))
        w.close()
        return 0
    period = 1.0 / a.rate if a.rate > 0 else 0.0
    t0 = time.monotonic()
    keyframes = 0
    for i in range(1, a.frames + 1):
        if period:
            due = t0 + i * period
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        key = i == 1 or (a.key_every > 0 and i % a.key_every == 1) or rnd.random() < 0.02
        keyframes += key
        n = rnd.randint(a.min_bytes, max_bytes)
        w.write(time.time_ns(), i, FLAG_KEYFRAME if key else 0, CODEC_H264, payload_for(i, n))
    print(json.dumps({"summary": True, "frames": a.frames, "keyframes": keyframes,
                      "sequence": w.sequence, "seconds": round(time.monotonic() - t0, 3)}))
    w.close()
    return 0


def cmd_read(a):
    r = Reader(a.path, crc=not a.no_crc)
    deadline = time.monotonic() + a.timeout
    print(json.dumps({"ready": True}), flush=True)
    while not r.attach():
        if time.monotonic() > deadline:
            print(json.dumps({"summary": True, "error": "ring file never appeared"}))
            return 1
        time.sleep(0.01)
    frames = 0
    last_seq = 0
    out = sys.stdout
    while time.monotonic() < deadline:
        got = r.poll()
        if got is None:
            time.sleep(0.0002)
            continue
        sequence, hdr, payload = got
        frame_id, frame_seq, size, flags, codec, crc, _ = hdr
        if frame_seq == last_seq:
            # Read whole before its own commit (write_len is stored before
            # the sequence): already printed under the previous sequence.
            continue
        frames += 1
        out.write(json.dumps({"sequence": sequence, "frame_id": frame_id, "frame_seq": frame_seq,
                              "size": size, "flags": flags, "codec": codec, "crc32": crc,
                              "payload_crc": zlib.crc32(payload) & 0xFFFFFFFF,
                              "pattern_ok": payload == payload_for(frame_seq, size)}) + "\n")
        last_seq = frame_seq
        if a.until_seq and frame_seq >= a.until_seq:
            break
    out.write(json.dumps({"summary": True, "frames": frames, "last_frame_seq": last_seq, "torn": r.torn,
                          "crc_failures": r.crc_failures, "malformed": r.malformed}) + "\n")
    out.flush()
    return 0 if (not a.until_seq or last_seq >= a.until_seq) else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write frames into a ring")
    w.add_argument("path")
    w.add_argument("--size", type=int, default=4 << 20, help="file size, control region included")
    w.add_argument("--frames", type=int, default=100)
    w.add_argument("--rate", type=float, default=1000.0, help="frames per second (0 = as fast as possible)")
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--min-bytes", type=int, default=1)
    w.add_argument("--max-bytes", type=int, default=32768)
    w.add_argument("--key-every", type=int, default=0, help="also a keyframe every N frames")
    w.add_argument("--no-crc", action="store_true", help="store 0 as the CRC, like a writer with CRC off")
    w.add_argument("--torn", type=float, default=0.0, help="rewrite the slot for this many seconds instead")
    r = sub.add_parser("read", help="read frames from a ring")
    r.add_argument("path")
    r.add_argument("--until-seq", type=int, default=0, help="stop after the frame with this frame_seq")
    r.add_argument("--timeout", type=float, default=30.0)
    r.add_argument("--no-crc", action="store_true")
    f = sub.add_parser("feed", help="write frames as commands on stdin say (see above)")
    f.add_argument("path")
    f.add_argument("--size", type=int, default=4 << 20, help="file size, control region included")
    f.add_argument("--no-crc", action="store_true")
    a = p.parse_args(argv)
    if a.cmd == "write":
        return cmd_write(a)
    if a.cmd == "feed":
        return cmd_feed(a)
    return cmd_read(a)


if __name__ == "__main__":
    sys.exit(main())
