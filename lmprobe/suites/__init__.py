"""Deprecated: moved to lmprobe.lm.suites (text-only code lives under lmprobe/lm/)."""

from lmprobe.moved import alias_package

alias_package(__name__, "lmprobe.lm.suites")
