"""The package's public surface: `from oplora import ...` as the README shows it."""

from __future__ import annotations

import subprocess
import sys


def test_public_names_resolve():
    import oplora

    for name in oplora.__all__:
        assert getattr(oplora, name) is not None, name


def test_collapse_is_the_function_even_after_importing_the_submodule():
    code = (
        "import oplora.collapse\n"
        "from oplora import collapse\n"
        "import oplora\n"
        "assert callable(collapse) and collapse.__name__ == 'collapse', collapse\n"
        "assert callable(oplora.collapse)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_is_light():
    code = "import sys, oplora, oplora.run.spec; assert 'torch' not in sys.modules and 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_all_matches_exports():
    import oplora

    assert sorted(oplora.__all__) == sorted(oplora._EXPORTS)
