"""Models on the Hugging Face Hub: `hf:USER/NAME` downloads an export, `push` uploads one.

Only huggingface_hub's public API (`snapshot_download`, `HfApi.create_repo`, `HfApi.upload_folder`); its
token is huggingface_hub's own (`HF_TOKEN`, or `hf auth login`). Nothing is fetched unless asked.
"""

from __future__ import annotations

from pathlib import Path

from libcem.errors import LibcemError

PREFIX = "hf:"


def is_hub_id(spec: str | Path) -> bool:
    return str(spec).startswith(PREFIX)


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise LibcemError("models on the Hugging Face Hub need huggingface_hub: pip install huggingface_hub") from None
    return huggingface_hub


ERRORS = (OSError, ValueError)  # huggingface_hub's HTTP and offline errors are OSErrors; a bad repo id a ValueError


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def download(spec: str) -> Path:
    """hf:USER/NAME[@REVISION] -> the local folder of its files (cached by huggingface_hub)."""
    hub = _hub()
    repo_id, _, revision = spec[len(PREFIX):].partition("@")
    try:
        return Path(hub.snapshot_download(repo_id=repo_id, revision=revision or None))
    except ERRORS as err:
        raise LibcemError(f"could not download {repo_id} from the Hugging Face Hub (offline, or no such model?): "
                          f"{_first_line(err)}") from None


def push(folder: Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload export `folder` to model repository `repo_id` (created when missing); returns its URL."""
    from libcem import __version__

    hub = _hub()
    api = hub.HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=f"libcem {__version__} export")
    except ERRORS as err:
        raise LibcemError(f"could not upload to {repo_id} on the Hugging Face Hub: {_first_line(err)}") from None
    return str(url)
