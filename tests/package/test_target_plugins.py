"""Package targets are plugins (entry-point group `mdeploy.targets`), like converters, passes and runners: the
built-in ones are listed by `mdeploy plugins`, a third party's target is found through its package's entry point and
packages a model, and a broken one is listed as broken and refused with one error line, never a traceback.

The third party is a real distribution on sys.path (a *.dist-info folder with entry_points.txt beside its module),
found by importlib.metadata exactly as an installed package is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures import onnx_graphs
from tests.checks import assert_clean_error

ACME = '''
import shutil
from mdeploy.core import Format
from mdeploy.packaging.base import Written

FORMATS = (Format.ONNX,)

def check(request):
    pass

def write(request, root):
    shutil.copy(request.model.path, root / "model.onnx")
    return Written(files=["model.onnx"], readme="copy model.onnx to the acme server")

def server_check(model):
    raise NotImplementedError

def server(request, root, port):
    raise NotImplementedError
'''


@pytest.fixture(scope="module")
def third_party(tmp_path_factory) -> dict[str, str]:
    """PYTHONPATH holding a distribution that declares two targets: `acme` (works) and `broken` (its module does
    not import)."""
    site = tmp_path_factory.mktemp("site")
    (site / "acme_serving.py").write_text(ACME)
    (site / "acme_broken.py").write_text("raise ImportError('acme_broken needs acme-sdk')\n")
    info = site / "acme_serving-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-serving\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mdeploy.targets]\nacme = acme_serving\nbroken = acme_broken\n")
    return {"PYTHONPATH": str(site)}


def test_plugins_lists_the_built_in_targets(cli):
    result = cli("plugins", "--json")
    assert result.code == 0, result.stderr
    rows = {r["name"]: r for r in result.json["plugins"] if r["group"] == "targets"}
    assert set(rows) == {"mlflow", "triton", "tfserving", "kserve"}
    assert all(r["status"] == "ok" for r in rows.values())
    assert rows["triton"]["formats"] == "onnx,tensorrt"


def test_a_broken_target_is_listed_as_broken(cli, third_party):
    result = cli("plugins", "--json", env=third_party)
    assert result.code == 0, result.stderr
    rows = {r["name"]: r for r in result.json["plugins"] if r["group"] == "targets"}
    assert rows["broken"]["status"] == "broken" and "acme-sdk" in rows["broken"]["error"]
    assert rows["acme"]["status"] == "ok" and rows["acme"]["formats"] == "onnx"
    assert rows["triton"]["status"] == "ok"


def test_a_third_party_target_packages_a_model(cli, third_party, tmp_path):
    model = onnx_graphs.mlp(tmp_path / "m.onnx")
    out = tmp_path / "pkg"
    result = cli("package", model, "--target", "acme", "-o", out, "--json", env=third_party)
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.onnx"]
    assert "acme server" in (out / "README.md").read_text()


def test_packaging_with_a_broken_target_is_one_clean_error(cli, third_party, tmp_path):
    model = onnx_graphs.mlp(tmp_path / "m.onnx")
    result = cli("package", model, "--target", "broken", "-o", tmp_path / "pkg", env=third_party)
    error = assert_clean_error(result, hint=True, out=tmp_path / "pkg")
    assert "broken" in error and "acme-sdk" in error


def test_an_unknown_target_names_the_installed_ones(cli, tmp_path):
    model = onnx_graphs.mlp(tmp_path / "m.onnx")
    result = cli("package", model, "--target", "acme", "-o", tmp_path / "pkg")
    error = assert_clean_error(result, out=tmp_path / "pkg")
    assert "kserve|mlflow|tfserving|triton" in error
