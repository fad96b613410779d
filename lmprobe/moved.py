"""Old import paths that keep working for one release, with a DeprecationWarning.

Text-only code moved from lmprobe/data and lmprobe/suites to lmprobe/lm/ (0.2); notebooks that
still say `from lmprobe.data import load_tokenizer` or `import lmprobe.suites.build` get the
same module objects as the new paths (aliases, not copies, so patches and state are shared).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from types import ModuleType

REMOVED_IN = "0.3"


def alias_package(old: str, new: str) -> ModuleType:
    """Make `old` and each `old.X` the modules `new` and `new.X`; warn once per import of `old`."""
    warnings.warn(f"{old} moved to {new}; import it from there (the old path goes in lmprobe {REMOVED_IN})",
                  DeprecationWarning, stacklevel=3)
    package = importlib.import_module(new)
    for info in pkgutil.iter_modules(package.__path__):
        sys.modules[f"{old}.{info.name}"] = importlib.import_module(f"{new}.{info.name}")
    sys.modules[old] = package
    return package
