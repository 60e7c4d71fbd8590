"""Generate the Python protobuf and gRPC modules from proto/.

Usage: python scripts/gen_proto.py [--out DIR]

The modules go to client/_proto by default, as the package
rerank_client._proto.rerank.v1. The .proto files are mapped under that
package path, so the generated gRPC module imports its message module
through the package instead of a top-level "rerank" name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
PACKAGE_PREFIX = "rerank_client/_proto"
PROTO_FILES = ["rerank/v1/rerank.proto"]


def generate(out_dir: Path) -> list[Path]:
    """Run protoc from grpcio-tools and return the files it wrote under out_dir."""
    from grpc_tools import protoc  # imported here: grpcio-tools is a test/dev dependency

    staging = out_dir / "_staging"
    staging.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PACKAGE_PREFIX}={PROTO_ROOT}",
        f"--python_out={staging}",
        f"--pyi_out={staging}",
        f"--grpc_python_out={staging}",
        *[f"{PROTO_ROOT / name}" for name in PROTO_FILES],
    ]
    status = protoc.main(args)
    if status != 0:
        raise RuntimeError(f"protoc failed with exit status {status}: {' '.join(args)}")

    written = []
    generated_root = staging / PACKAGE_PREFIX
    for path in sorted(generated_root.rglob("*.py*")):
        target = out_dir / path.relative_to(generated_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        written.append(target)
    for package_dir in {p.parent for p in written} | {out_dir, out_dir / "rerank"}:
        init = package_dir / "__init__.py"
        if not init.exists():
            init.write_text("")
    _remove_tree(staging)
    return written


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        if child.is_dir():
            child.rmdir()
        else:
            child.unlink()
    path.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "client" / "_proto",
                        help="folder that receives the rerank/v1 modules (default: client/_proto)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
