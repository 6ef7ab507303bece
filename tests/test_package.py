"""LoveKey installs as one package, `lovekey`, and works from outside the repository.

pytest puts the repository's root on `sys.path` (tests/ is a package), so inside the suite the
old top-level names (`alerts`, `ingest`, ...) still import from the folders. A module that
names itself by one of them as a string (a template loader, a resource lookup) passes every
other test and fails in an installed copy. This test runs in a fresh interpreter whose working
directory is elsewhere, as an installed `lovekey` does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECK = """
import importlib, importlib.util, pkgutil, sys
import lovekey

# every module imports (nothing connects at import time)
for module in pkgutil.walk_packages(lovekey.__path__, "lovekey."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)

# what is looked up by name at run time is found under lovekey.*
from lovekey.alerts.ack_pages import _page_css, _templates
from lovekey.alerts.chains import ChainBook
from lovekey.config import load_settings
from lovekey.storage.migrate import discover
from lovekey.web.app import create_app

_templates().get_template("ack.html")
assert _page_css()
settings = load_settings(environ={}, data_dir=sys.argv[1])
ChainBook.load(settings.alerts.chains_file)
assert discover()
create_app(settings, "postgresql://nobody@127.0.0.1:1/none")

# and the old top-level names are not installed
for name in ("config", "storage", "devices", "ingest", "detectors", "alerts", "simulator",
             "web", "bench", "evaluation"):
    assert importlib.util.find_spec(name) is None, name
print("ok")
"""


def test_every_module_works_from_outside_the_repository(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path / "data")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr[-3000:]
