#!/usr/bin/env python3
"""What a first touch of memory costs on this machine, one GiB at a time. On a virtual machine
whose balloon device reports free pages to the host, memory the guest freed a few seconds ago
faults again on the host when touched, and the page-cache copy of every buffered write pays it
(see "Many producers (P7)" in docs/performance.md).

    scripts/first-touch.py anon GIB       touch GIB GiB of fresh anonymous memory, three rounds
    scripts/first-touch.py write DIR GIB  write GIB GiB into a new file under DIR in 1 MiB
                                          pwrites (no fsync); system time per GiB
    scripts/first-touch.py hold GIB       touch GIB GiB and keep it until interrupted, so that
                                          the page cache must recycle its own pages

Prints seconds per GiB (wall time for anon, system time for write).
"""
import mmap
import os
import signal
import sys
import time

GIB = 1 << 30
CHUNK = 1 << 20


def touch(region, gib_index, chunk):
    for at in range(gib_index * GIB, (gib_index + 1) * GIB, CHUNK):
        region[at:at + CHUNK] = chunk


def anon(gib):
    chunk = b"\x01" * CHUNK
    for round_no in range(3):
        region = mmap.mmap(-1, gib * GIB)
        for g in range(gib):
            started = time.monotonic()
            touch(region, g, chunk)
            print(f"round {round_no} GiB {g}: {time.monotonic() - started:.3f} s", flush=True)
        region.close()


def write(directory, gib):
    path = os.path.join(directory, f"first-touch-{os.getpid()}")
    chunk = b"\x07" * CHUNK
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    try:
        offset = 0
        for g in range(gib):
            before = os.times().system
            for _ in range(GIB // CHUNK):
                os.pwrite(fd, chunk, offset)
                offset += CHUNK
            print(f"GiB {g}: system {os.times().system - before:.3f} s", flush=True)
    finally:
        os.close(fd)
        os.unlink(path)


def hold(gib):
    region = mmap.mmap(-1, gib * GIB)
    chunk = b"\x01" * CHUNK
    for g in range(gib):
        touch(region, g, chunk)
    print(f"holding {gib} GiB; interrupt to release", flush=True)
    signal.pause()


def main(args):
    if len(args) == 2 and args[0] == "anon":
        anon(int(args[1]))
    elif len(args) == 3 and args[0] == "write":
        write(args[1], int(args[2]))
    elif len(args) == 2 and args[0] == "hold":
        hold(int(args[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
