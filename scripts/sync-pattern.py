#!/usr/bin/env python3
"""How fast the disk under DIR takes a group-commit pattern: 16 threads, each writing 64 x 1 MiB
to a file of its own with fdatasync after every write (what Sluice does per partition under P1),
with each file prepared one of four ways first. Prints MB/s. See docs/performance.md.

    scripts/sync-pattern.py MODE DIR

MODE: append     empty files (Sluice's pattern)
      keepsize   fallocate(FALLOC_FL_KEEP_SIZE) of the whole 64 MiB: blocks reserved, size 0
      fallocate  posix_fallocate of the whole 64 MiB: size set, blocks unwritten
      overwrite  the 64 MiB written and synced beforehand
"""
import ctypes
import os
import sys
import threading
import time

FILES = 16
WRITES = 64
WRITE_BYTES = 1 << 20
FALLOC_FL_KEEP_SIZE = 1


def prepare(fd, mode, payload):
    total = WRITES * WRITE_BYTES
    if mode == "keepsize":
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, ctypes.c_long(0), ctypes.c_long(total)) != 0:
            raise OSError(ctypes.get_errno(), "fallocate")
    elif mode == "fallocate":
        os.posix_fallocate(fd, 0, total)
    elif mode == "overwrite":
        for i in range(WRITES):
            os.pwrite(fd, payload, i * WRITE_BYTES)
    elif mode != "append":
        sys.exit(f"unknown mode {mode!r}: append, keepsize, fallocate or overwrite")


def write_synced(fd, payload):
    for i in range(WRITES):
        os.pwrite(fd, payload, i * WRITE_BYTES)
        os.fdatasync(fd)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    mode, directory = sys.argv[1], sys.argv[2]
    payload = os.urandom(WRITE_BYTES)
    paths = [os.path.join(directory, f"sync-pattern-{i}") for i in range(FILES)]
    fds = [os.open(p, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644) for p in paths]
    try:
        for fd in fds:
            prepare(fd, mode, payload)
        os.sync()
        started = time.monotonic()
        threads = [threading.Thread(target=write_synced, args=(fd, payload)) for fd in fds]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        print(f"{mode}: {FILES * WRITES * WRITE_BYTES / elapsed / 1e6:.0f} MB/s")
    finally:
        for fd in fds:
            os.close(fd)
        for p in paths:
            os.unlink(p)


main()
