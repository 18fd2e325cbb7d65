"""How much sound a WAV file holds: prints seconds above -40 dBFS and the peak; exit 1 when silent.

boot-test.sh reads what the VM's sound card played (QEMU's wav audio backend) with it. QEMU fills in
the header's sizes only when it exits, so the header is read field by field and the samples are
whatever follows it.
"""

import array
import struct
import sys

THRESHOLD = 0.01  # -40 dBFS
HEADER = 44  # a plain PCM WAV header, as QEMU writes it


def main(path: str) -> int:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < HEADER or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        print(f"{path}: no sound recorded ({len(data)} bytes, not a WAV file)")
        return 1
    channels, rate = struct.unpack_from("<HI", data, 22)
    bits = struct.unpack_from("<H", data, 34)[0]
    if bits != 16:
        print(f"{path}: {bits}-bit samples, expected 16-bit")
        return 1
    raw = data[HEADER:]
    samples = array.array("h", raw[: len(raw) // 2 * 2])
    window = rate * channels // 10
    loud = sum(
        1
        for i in range(0, len(samples), window)
        if max((abs(x) for x in samples[i : i + window]), default=0) / 32768 > THRESHOLD
    )
    peak = max((abs(x) for x in samples), default=0) / 32768
    total = len(samples) / (rate * channels) if rate else 0
    print(f"{loud / 10:.1f} s of sound above -40 dBFS in {total:.1f} s played (peak {peak:.2f})")
    return 0 if loud else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
