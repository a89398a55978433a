"""TensorFlow's first import leaves out its native start-up noise and nothing else."""

import os
import subprocess
import sys
from pathlib import Path

from steps.models.keras.startup import kept_lines, native_stderr_filtered

ROOT = Path(__file__).resolve().parents[2]
BANNER = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796011989.167353    4808 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.\n"
    "I0000 00:00:1796011989.168434    4808 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.\n"
)
CUINIT = ("E0000 00:00:1796011993.558772    4808 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
          "Failed call to cuInit: UNKNOWN ERROR (303)\n")


def test_the_banners_and_a_driverless_cuinit_error_are_left_out_and_the_rest_kept():
    assert kept_lines(BANNER + "W real warning\n" + BANNER + CUINIT + "done\n") == "W real warning\ndone\n"


def test_a_cuinit_error_is_kept_where_a_driver_was_found():
    assert kept_lines(CUINIT) == CUINIT


def test_what_is_written_to_file_descriptor_2_comes_back_in_order_without_the_noise(capfd):
    with native_stderr_filtered():
        os.write(2, b"first\n" + BANNER.encode())
        os.write(2, b"native warning\n")
    assert capfd.readouterr().err == "first\nnative warning\n"


def test_importing_tensorflow_prints_nothing_else_to_stderr():
    code = ("import sys\n"
            "from steps.models.keras.startup import import_tensorflow, native_stderr_filtered\n"
            "with native_stderr_filtered():\n"
            "    print('before', file=sys.stderr)\n"
            "tf = import_tensorflow()\n"
            "print('after', file=sys.stderr)\n"
            "print(float(tf.constant(2.0) * 3))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "6.0\n"
    assert done.stderr == "before\nafter\n"
