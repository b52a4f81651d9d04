"""The wheel of the running libcem, written beside a kit so the kit installs the libcem that wrote it
on a machine where libcem is not published (a fresh Colab, Kaggle or Vast.ai machine).

From a checkout (`pip install -e .`, or src/ on PYTHONPATH) the wheel is built with `pip wheel` from a
clean copy of its pyproject.toml, README.md and src/; from an installed wheel, the installed files are
packed again (their RECORD says which).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata, util
from pathlib import Path

from libcem.errors import LibcemError

NAME = "libcem"
SOURCE_FILES = ("pyproject.toml", "README.md", "src")


def wheel_name() -> str:
    from libcem import __version__

    return f"{NAME}-{__version__}-py3-none-any.whl"


def source_tree() -> Path | None:
    """The checkout this libcem is imported from (its pyproject.toml two folders above the package)."""
    import libcem

    root = Path(libcem.__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    return root if pyproject.is_file() and f'name = "{NAME}"' in pyproject.read_text() else None


def build_wheel(out_dir: Path) -> Path:
    """Write the wheel of the running libcem into `out_dir`; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    root = source_tree()
    path = _from_checkout(root, out_dir) if root else _from_installed(out_dir)
    if path.name != wheel_name():
        raise LibcemError(f"built {path.name}, expected {wheel_name()}: is the running libcem the checkout's?")
    return path


def _from_checkout(root: Path, out_dir: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="libcem-wheel-") as tmp:
        copy = Path(tmp) / "src-copy"
        copy.mkdir()
        for name in SOURCE_FILES:
            source = root / name
            if source.is_dir():
                shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            elif source.is_file():
                shutil.copy2(source, copy / name)
        offline = util.find_spec("setuptools") is not None and util.find_spec("wheel") is not None
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp, str(copy)]
        done = subprocess.run(cmd + (["--no-build-isolation"] if offline else []), capture_output=True, text=True)
        built = sorted(Path(tmp).glob(f"{NAME}-*.whl"))
        if done.returncode or not built:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise LibcemError(f"pip wheel could not build libcem from {root}: {last}")
        target = out_dir / built[-1].name
        shutil.copyfile(built[-1], target)
        return target


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _from_installed(out_dir: Path) -> Path:
    """Pack the installed files of libcem (package and dist-info, not pip's own records) into a wheel."""
    try:
        dist = metadata.distribution(NAME)
    except metadata.PackageNotFoundError:
        raise LibcemError("libcem is neither a checkout nor an installed package: cannot write its wheel") from None
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    files = [f for f in dist.files or [] if f.parts[0] in (NAME, f"{dist.metadata['Name']}-{dist.version}.dist-info")
             or f.parts[0].endswith(".dist-info") and f.parts[0].startswith(f"{NAME}-")]
    files = [f for f in files if f.name not in skip and "__pycache__" not in f.parts]
    if not any(f.parts[0] == NAME for f in files):
        raise LibcemError("the installed libcem is an editable install without a checkout: cannot write its wheel")
    path = out_dir / wheel_name()
    info = next(f.parts[0] for f in files if f.parts[0].endswith(".dist-info"))
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(files, key=str):
            data = Path(dist.locate_file(f)).read_bytes()
            zf.writestr(str(f.as_posix()), data)
            record.append(_record_line(f.as_posix(), data))
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path
