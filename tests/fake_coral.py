"""A Coral USB accelerator for machines without one: its sysfs entry and a libedgetpu stand-in.

The stand-in is a real shared library that LiteRT loads as an external delegate, as it loads
libedgetpu. Its delegate takes no operation (the model runs on the processor), and environment
variables choose what the device does:

- ``FAKE_EDGETPU_OPENED``: a file to which each opening appends the opening process's id (who
  touched the device, the probe's child included);
- ``FAKE_EDGETPU_HANG``: seconds each opening takes (a Coral that answers late);
- ``FAKE_EDGETPU_BROKEN``: set, each opening fails after that (no delegate), as a broken one does.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from appliance.vision.card import load_card

SOURCE = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
    void *data;
    int (*prepare)(void *context, void *delegate);
    void *copy_from_buffer_handle, *copy_to_buffer_handle, *free_buffer_handle;
    int64_t flags;
    void *opaque_delegate_builder;
    char room[256]; /* whatever a newer TFLite appends to TfLiteDelegate reads as zero */
} Delegate;

static int prepare(void *context, void *delegate) {
    (void)context;
    (void)delegate;
    return 0; /* kTfLiteOk, taking no node: the interpreter runs every op itself */
}

void *tflite_plugin_create_delegate(char **keys, char **values, int count, void (*report)(const char *)) {
    const char *opened = getenv("FAKE_EDGETPU_OPENED"), *hang = getenv("FAKE_EDGETPU_HANG");
    (void)keys;
    (void)values;
    (void)count;
    if (opened) {
        FILE *log = fopen(opened, "a");
        if (log) {
            fprintf(log, "%d\n", (int)getpid());
            fclose(log);
        }
    }
    if (hang)
        sleep((unsigned)atoi(hang));
    if (getenv("FAKE_EDGETPU_BROKEN")) {
        report("the fake Edge TPU did not answer");
        return NULL;
    }
    Delegate *delegate = calloc(1, sizeof *delegate);
    delegate->prepare = prepare;
    return delegate;
}

void tflite_plugin_destroy_delegate(void *delegate) { free(delegate); }
"""

# Coral's USB ids once its firmware is loaded (appliance.platform.CORAL_USB_IDS).
USB_IDS = ("18d1", "9302")


def fake_libedgetpu(folder: Path) -> Path:
    """The stand-in library, compiled into ``folder`` (Debian's gcc)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed (Debian's gcc)"
    folder.mkdir(parents=True, exist_ok=True)
    source, library = folder / "fake_edgetpu.c", folder / "libedgetpu.so.1"
    source.write_text(SOURCE)
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True, timeout=60)
    return library


def fake_usb_devices(folder: Path) -> Path:
    """A ``/sys/bus/usb/devices`` with a Coral on bus 1, port 1 (for ``platform.SYS_USB``)."""
    device = folder / "1-1"
    device.mkdir(parents=True)
    (device / "idVendor").write_text(USB_IDS[0] + "\n")
    (device / "idProduct").write_text(USB_IDS[1] + "\n")
    return folder


def edgetpu_card(folder: Path) -> Path:
    """A copy of the model card whose Edge TPU file is the processor's model (the stand-in runs
    every operation on the processor; the compiled file is made only on a build host)."""
    card = load_card()
    folder.mkdir(parents=True)
    shutil.copy(card.path, folder / card.path.name)
    shutil.copy(card.model_path(), folder / card.file)
    assert card.file_edgetpu is not None
    shutil.copy(card.model_path(), folder / card.file_edgetpu)
    return folder / card.path.name


def openers(log: Path) -> list[int]:
    """The ids of the processes that opened the fake device, in order."""
    return [int(line) for line in log.read_text().split()] if log.exists() else []
