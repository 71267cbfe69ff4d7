"""`twin-stream models new NAME`: a working model skeleton from `models/_template`.

The template is a complete kernel model (manifest with parameters, outputs and state, a
compiled loop, a debounced alert and an estimate on a cadence); the copy gets the new name in
its manifest, its registration and its class name, so it runs as soon as it is written.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from twin_stream.sdk.contract import ContractError

TEMPLATE_NAME = "template_model"
TEMPLATE_CLASS = "TemplateModel"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def new_model(name: str, models_dir: Path) -> Path:
    """Write models_dir/<name>/ from the template; returns the folder."""
    if not _NAME.fullmatch(name):
        raise ContractError(
            f"model name {name!r}: use lower case letters, digits and _ (a-z first)"
        )
    target = models_dir / name
    if target.exists():
        raise ContractError(f"{target} exists already")
    template = resources.files("models") / "_template"
    target.mkdir(parents=True)
    for entry in template.iterdir():
        if not entry.is_file() or entry.name.endswith(".pyc"):
            continue
        text = entry.read_text(encoding="utf-8")
        text = text.replace(TEMPLATE_NAME, name).replace(TEMPLATE_CLASS, class_name(name))
        text = text.replace("models._template", f"{models_dir.name}.{name}")
        (target / entry.name).write_text(text, encoding="utf-8")
    init = models_dir / "__init__.py"
    if not init.exists():
        init.write_text("", encoding="utf-8")
    return target
