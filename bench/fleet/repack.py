"""isobench's wheel from the installed distribution, for a controller that installed
isobench from a wheel (no checkout to build from): the files pip's RECORD lists for the
package and its .dist-info, packed again with a fresh RECORD, so the hosts get the very
code the controller runs. Kept in the cache keyed by the files' hash."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from importlib import metadata
from pathlib import Path

SKIP = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack_installed(out: Path) -> Path:
    dist = metadata.distribution("isobench")
    files = []
    for f in dist.files or []:
        parts = Path(str(f)).parts
        if ".." in parts or "__pycache__" in parts or f.name.endswith(".pyc"):
            continue  # scripts outside site-packages (the entry point is regenerated)
        if parts[0].endswith(".dist-info") and f.name in SKIP:
            continue
        files.append((str(f), Path(str(f.locate())).read_bytes()))
    files.sort()
    key = hashlib.sha256(b"".join(n.encode() + b"\0" + d for n, d in files)).hexdigest()[:16]
    wheel = out / key / f"isobench-{dist.version}-py3-none-any.whl"
    if wheel.is_file():
        return wheel
    wheel.parent.mkdir(parents=True, exist_ok=True)
    info = next(n for n, _ in files if n.endswith(".dist-info/METADATA")).split("/")[0]
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        record = []
        for name, data in files:
            z.writestr(name, data)
            record.append(f"{name},{_digest(data)},{len(data)}")
        record.append(f"{info}/RECORD,,")
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    tmp.rename(wheel)
    return wheel
