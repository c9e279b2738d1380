#!/usr/bin/env python3
"""Writes SIZE_MIB MiB of benchmark input to stdout, deterministic from SEED.

A mix meant to look like what a backup of an application carries:
  - about half incompressible segments (already compressed files, images, keys),
  - about half text-like segments: rows of a dump or a log, drawn from a pool of
    2^17 distinct lines (ids, words, timestamps, amounts), so that zstd finds
    structure but the stream never repeats itself at chunk scale (no free dedup).
Segments are 256 KiB .. 8 MiB long. Same SIZE and SEED, same bytes.

usage: gen-data.py SIZE_MIB [SEED] > file
"""
import random
import sys


def main():
    size = int(sys.argv[1]) << 20
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 42
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ne", "ru", "to", "sa", "vi", "de", "po", "an", "er",
            "in", "on", "us", "ta", "re", "xi", "zu", "bo"]
    words = ["".join(rng.choices(syll, k=rng.randint(1, 4))) for _ in range(1500)]
    kinds = ["INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR"]
    pool = []
    for i in range(1 << 17):
        r = rng.random()
        if r < 0.5:  # a COPY row of a dump
            line = "%d\t%s %s\t%s@%s.org\t2024-%02d-%02d %02d:%02d:%02d+00\t%d.%02d\t%s\n" % (
                rng.randrange(10**7), rng.choice(words), rng.choice(words),
                rng.choice(words), rng.choice(words), rng.randint(1, 12),
                rng.randint(1, 28), rng.randrange(24), rng.randrange(60),
                rng.randrange(60), rng.randrange(100000), rng.randrange(100),
                rng.choice(("t", "f")))
        else:  # a log line
            line = "2024-%02d-%02dT%02d:%02d:%02d.%03dZ %s [%s] %s %s %s id=%08x took=%dms\n" % (
                rng.randint(1, 12), rng.randint(1, 28), rng.randrange(24),
                rng.randrange(60), rng.randrange(60), rng.randrange(1000),
                rng.choice(kinds), rng.choice(words),
                " ".join(rng.choices(words, k=rng.randint(2, 9))),
                rng.choice(("GET", "POST", "PUT")), "/api/" + rng.choice(words),
                rng.getrandbits(32), rng.randrange(2000))
        pool.append(line.encode())
    out = sys.stdout.buffer
    written = 0
    while written < size:
        n = min(rng.randint(256 << 10, 8 << 20), size - written)
        if rng.random() < 0.5:
            buf = rng.randbytes(n)
        else:
            parts = []
            got = 0
            while got < n:
                rows = rng.choices(pool, k=4096)
                parts.extend(rows)
                got += sum(map(len, rows))
            buf = b"".join(parts)[:n]
        out.write(buf)
        written += n
    out.flush()


if __name__ == "__main__":
    main()
