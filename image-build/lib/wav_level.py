"""How much sound a WAV file holds: prints seconds above -40 dBFS and the peak; exit 1 when silent.

boot-test.sh reads what the VM's sound card played (QEMU's wav audio backend) with it.
"""

import array
import sys
import wave

THRESHOLD = 0.01  # -40 dBFS
HEADER = 44  # a plain PCM WAV header, as QEMU writes it


def main(path: str) -> int:
    try:
        with wave.open(path) as w:
            if w.getsampwidth() != 2:
                print(f"{path}: {8 * w.getsampwidth()}-bit samples, expected 16-bit")
                return 1
            rate, channels = w.getframerate(), w.getnchannels()
            samples = array.array("h", w.readframes(w.getnframes()))
        if not samples:  # QEMU writes the sizes into the header only when it exits: read what follows it
            with open(path, "rb") as f:
                raw = f.read()[HEADER:]
            samples = array.array("h", raw[: len(raw) // 2 * 2])
    except (OSError, EOFError, wave.Error) as e:
        print(f"{path}: no sound recorded ({e or 'empty file'})")
        return 1
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
