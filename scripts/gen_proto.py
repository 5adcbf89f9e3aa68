"""Regenerate gateway/_generated from proto/ (run via `make proto`).

protoc writes absolute imports (`from pretrade.v1 import ...`); they are
rewritten to package-relative ones so the generated code lives inside the one
importable package, `gateway`.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sys

import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT = ROOT / "gateway" / "_generated"


def main() -> int:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    # protoc finds the mypy-protobuf plugins on PATH, next to this interpreter.
    bindir = str(pathlib.Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={OUT}",
            f"--grpc_python_out={OUT}",
            f"--mypy_out={OUT}",
            f"--mypy_grpc_out={OUT}",
            *protos,
        ]
    )
    if rc != 0:
        return rc
    pattern = re.compile(r"^from pretrade\.v1 import", re.MULTILINE)
    for path in OUT.rglob("*.py*"):
        text = path.read_text()
        new = pattern.sub("from gateway._generated.pretrade.v1 import", text)
        new = new.replace("import pretrade.v1.", "import gateway._generated.pretrade.v1.")
        if new != text:
            path.write_text(new)
    for directory in [OUT, *[d for d in OUT.rglob("*") if d.is_dir()]]:
        (directory / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
