"""The report files of a checkpoint (privacy audit, evaluation, model card) for the Results tab."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

__all__ = ["SECTIONS", "checkpoint_reports", "read_json_report", "report_section", "copy_for_download"]

#: The Results tab's report sections: a file is a privacy report when its name says so.
SECTIONS = ("privacy", "model")

_CONFIG_JSON = re.compile(r"^(model_index|config|scheduler_config|.*_config)\.json$")


def checkpoint_reports(checkpoint: Path, extra: Path | None = None) -> dict[str, list[Path]]:
    """Report files of a checkpoint: JSON, Markdown and PNG files in it, ``reports/`` and ``extra``.

    Configs of the model components (``model_index.json``, ``config.json`` ...) are not reports.
    """
    folders = [Path(checkpoint), Path(checkpoint) / "reports"] + ([Path(extra)] if extra else [])
    found: dict[str, list[Path]] = {"json": [], "png": [], "md": []}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            suffix = path.suffix.lower().lstrip(".")
            if path.is_file() and suffix in found and not _CONFIG_JSON.match(path.name):
                found[suffix].append(path)
    return found


def read_json_report(path: Path) -> Any:
    """A report JSON file, or a dict saying why it could not be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        return {"error": f"{path.name} could not be read: {error}"}


def report_section(path: Path) -> str:
    """``"privacy"`` for a privacy-audit file (``privacy`` in its name), else ``"model"``."""
    return "privacy" if "privacy" in Path(path).name.lower() else "model"


def copy_for_download(paths: list[Path], folder: Path) -> list[Path]:
    """Copy ``paths`` into ``folder`` (which the app serves) under unique names, for download.

    The checkpoint folder itself is not served (it holds the weights), only its figures and
    ``reports/``; a copy also keeps the download as it was when the page was refreshed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in paths:
        target = folder / Path(path).name
        k = 1
        while target.exists():
            k += 1
            target = folder / f"{Path(path).stem}-{k}{Path(path).suffix}"
        copies.append(Path(shutil.copyfile(path, target)))
    return copies
