"""A Ctrl-C while the interpreter exits (a library's exit-time handler still running) is one line at
most, never a traceback from inside that handler; a second one ends the process at once."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import pdp_gpt2

SRC = os.path.dirname(os.path.dirname(pdp_gpt2.__file__))  # the source tree under test

# An exit-time handler registered by "a library", during which the user presses Ctrl-C ``n`` times.
_PROGRAM = """
import atexit, os, signal, sys, time
n = int(sys.argv[1])
def slow_library_cleanup():
    for _ in range(n):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    time.sleep(0.2)
    print("cleanup finished", flush=True)
atexit.register(slow_library_cleanup)
from pdp_gpt2.cli.main import main
sys.argv = ["pdp-gpt2", "report", "--help"]
sys.exit(main())
"""


def _run(presses: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", _PROGRAM, str(presses)], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.slow
def test_ctrl_c_during_exit_is_one_line_and_the_exit_goes_on():
    p = _run(1)
    assert p.stderr.strip().splitlines() == [
        "pdp-gpt2: interrupted while exiting; nothing is left to save (Ctrl-C again to quit at once)"], p.stderr
    assert p.returncode == 0 and "cleanup finished" in p.stdout


@pytest.mark.slow
def test_a_second_ctrl_c_during_exit_quits_at_once_without_a_traceback():
    p = _run(2)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.returncode == 130 and "cleanup finished" not in p.stdout


def test_main_with_an_argument_list_leaves_the_callers_handler_alone():
    import signal

    from pdp_gpt2.cli.main import main

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert signal.getsignal(signal.SIGINT) is before


def test_the_exit_time_handler_prints_one_line_instead_of_raising(capsys):
    import signal

    from pdp_gpt2.cli.main import quiet_exit

    before = signal.getsignal(signal.SIGINT)
    try:
        quiet_exit()
        os.kill(os.getpid(), signal.SIGINT)  # the first press only: a second one would end this process
    finally:
        signal.signal(signal.SIGINT, before)
    assert capsys.readouterr().err == ("pdp-gpt2: interrupted while exiting; nothing is left to save "
                                       "(Ctrl-C again to quit at once)\n")
