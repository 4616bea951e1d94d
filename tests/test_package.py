"""Package-level promises: the public API and a cheap import."""

import subprocess
import sys

import heph


def test_version_is_a_string():
    assert heph.__version__.count(".") == 2


def test_every_public_name_resolves():
    for name in heph.__all__:
        assert getattr(heph, name) is not None, name


def test_importing_heph_loads_no_runtime_or_cli_dependency():
    code = (
        "import sys, heph, heph.core.engine\n"
        "heavy = [m for m in ('filelock', 'rich', 'typer', 'yaml', 'heph.runtime.app') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_json_store_loads_no_rich_or_typer():
    code = (
        "import sys, heph\n"
        "heph.Hephaestus(storage=heph.JsonFileStorage('/nonexistent-heph-store'))\n"
        "print(','.join(m for m in ('rich', 'typer', 'yaml') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
