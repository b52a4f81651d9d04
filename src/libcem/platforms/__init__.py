"""Ready-to-run kits for the platforms people train on: a Colab notebook, a Kaggle notebook and a
Vast.ai shell script, written by `libcem kit PLATFORM -o DIR`.

All three train a preset from `libcem.generative.presets` with `libcem train --resume` into a run folder on
storage that outlives the session, so running the kit again continues the run. What they run
after installing libcem lives in `libcem.platforms.runtime`; the notebook cells in
`libcem.platforms.notebook`; the script in `vast.sh` beside this file.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from libcem.errors import LibcemError

KITS = {
    "colab": ("libcem-colab.ipynb", "a Colab notebook: the run folder on Google Drive"),
    "kaggle": ("libcem-kaggle.ipynb", "a Kaggle notebook: the run folder in /kaggle/working, kept by Save Version"),
    "vast": ("libcem-vast.sh", "a Vast.ai shell script: trains in the background on the instance's volume"),
}
PYPI_NAME = "libcem"
WHERE_TO_UPLOAD = {  # where a kit looks for the wheel written beside it
    "colab": "your Google Drive folder MyDrive/libcem (or this session's Files pane)",
    "kaggle": "a Kaggle dataset added to this notebook (Add Input > Upload)",
    "vast": "the folder of this script on the instance (scp it beside the script)",
}


def default_install() -> str | None:
    """What a kit pip-installs when it finds no wheel beside it: where this libcem came from when that
    is a git repository or a URL (pinned to the installed commit); None otherwise (libcem is not on PyPI)."""
    import json
    from importlib import metadata

    try:
        text = metadata.distribution(PYPI_NAME).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    origin = json.loads(text) if text else {}
    url = origin.get("url", "")
    if "vcs_info" in origin and url:
        commit = origin["vcs_info"].get("commit_id")
        return f"git+{url}" + (f"@{commit}" if commit else "")
    if url.startswith(("http://", "https://")):
        return url
    return None


def pip_spec(install: str) -> str:
    """`install` (a published name with an optional version, a git URL or a wheel's URL) with the `text`
    extra, as pip takes it: libcem[text]==0.1.0, libcem[text] @ git+https://..."""
    if "[" in install:
        return install
    if any(c in install for c in "/:@"):
        return f"{PYPI_NAME}[text] @ {install}"
    name = re.match(r"[A-Za-z0-9_.-]*", install).group(0)
    return f"{name}[text]{install[len(name):]}"


def kit_text(platform: str, preset: str = "auto", run_name: str = "libcem-run", install: str | None = None) -> str:
    from libcem.generative.presets import get_preset
    from libcem.platforms.wheel import wheel_name

    if preset != "auto":
        get_preset(preset)
    if platform == "vast":
        text = resources.files(__package__).joinpath("vast.sh").read_text()
        values = {"PRESET": preset, "RUN_NAME": run_name, "INSTALL": pip_spec(install) if install else "",
                  "WHEEL": wheel_name()}
        for key, value in values.items():
            if any(c in value for c in "\"'$`\\\n"):
                raise LibcemError(f"the {key.lower()} '{value}' holds a quote, $, ` or \\: not allowed in the script")
            text = text.replace(f"@{key}@", value)
        return text
    if platform in KITS:
        from libcem.platforms.notebook import build_notebook, notebook_json

        return notebook_json(build_notebook(platform, preset, run_name, pip_spec(install) if install else None,
                                            wheel_name()))
    raise LibcemError(f"unknown platform '{platform}'; choose one of {', '.join(KITS)}")


def write_kit(platform: str, out_dir: Path, wheel: bool = True, **kwargs) -> list[Path]:
    """Write the kit for `platform` into `out_dir`, and beside it the wheel of this libcem (unless
    `wheel` is False); returns their paths."""
    text = kit_text(platform, **kwargs)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / KITS[platform][0]
    path.write_text(text)
    if platform == "vast":
        path.chmod(0o755)
    if not wheel:
        return [path]
    from libcem.platforms.wheel import build_wheel

    return [path, build_wheel(out_dir)]
