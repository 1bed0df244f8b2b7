"""alignkit's commands keep freed memory in glibc's malloc (``alignkit.malloc``), unless told otherwise."""

import os
import platform
import subprocess
import sys

import pytest

from alignkit.malloc import THRESHOLD, VARIABLES, keep_freed_memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


@glibc
def test_the_thresholds_are_raised_and_passed_to_launched_processes():
    environ: dict[str, str] = {}
    assert keep_freed_memory(environ)
    assert environ == {name: str(THRESHOLD) for name in VARIABLES}


@pytest.mark.parametrize("name", VARIABLES)
def test_a_setting_of_the_users_own_is_left_alone(name):
    environ = {name: "131072"}
    assert not keep_freed_memory(environ)
    assert environ == {name: "131072"}


@glibc
def test_the_alignkit_command_sets_them_for_its_workers():
    """``main`` runs before any command: a command's child process sees the variables."""
    code = ("import os, sys; from alignkit.cli import main as m; "
            "m.app = lambda: print(os.environ.get('MALLOC_TRIM_THRESHOLD_'), os.environ.get('MALLOC_MMAP_THRESHOLD_')); "
            "m.main()")
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == [str(THRESHOLD)] * 2
