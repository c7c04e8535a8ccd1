"""Imported at start-up by every Python process run with tests.sandbox.offline_env():
connections to anything but loopback fail (tests/netguard.py)."""

from tests.netguard import install

install()
