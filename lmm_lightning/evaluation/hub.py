"""Pushing a run's results.json and samples files to a Hugging Face Hub dataset repository (rank 0)."""

from pathlib import Path
from typing import Optional

from lmm_lightning.errors import InputError

def split_target(target: str) -> tuple[str, Optional[str]]:
    """"org/name" or "org/name/folder/in/repo" -> (repo id, folder in the repo or None)."""
    parts = [p for p in target.strip().strip("/").split("/") if p]
    if len(parts) < 2:
        raise InputError(
            f"evaluation.push_to_hub: expected a Hub repository id like 'my-org/my-evals' (optionally followed by "
            f"a folder, 'my-org/my-evals/run-1'), got {target!r}"
        )
    return "/".join(parts[:2]), "/".join(parts[2:]) or None


def push_results(output_dir: Path, target: str, filenames: list[str], token: Optional[str] = None) -> str:
    """Create the dataset repo if needed (private) and upload `filenames` from `output_dir` in one commit.

    Only the files named are uploaded: samples left in the folder by earlier runs stay local.
    Returns the commit URL. The token comes from `huggingface_hub` as usual (HF_TOKEN or `hf auth login`).
    """
    from huggingface_hub import HfApi

    repo_id, folder = split_target(target)
    output_dir = Path(output_dir)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(output_dir),
            path_in_repo=folder,
            allow_patterns=filenames,
            commit_message=f"lmm-lightning results from {output_dir.name or output_dir}",
        )
    except Exception as err:  # noqa: BLE001 - huggingface_hub raises many types (HTTP, auth, offline mode)
        raise InputError(
            f"evaluation.push_to_hub: could not push {output_dir} to the Hub dataset {repo_id}: {type(err).__name__}: "
            f"{err}. The results are saved in {output_dir}; check the token (HF_TOKEN or `hf auth login`, with write "
            f"access to {repo_id.split('/')[0]}) and the network, then upload them with "
            f"`hf upload {repo_id} {output_dir} {folder or '.'} --repo-type dataset`"
        ) from err
    return str(getattr(commit, "commit_url", commit))
