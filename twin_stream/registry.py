"""Discovery of models: every folder of the `models` package with a `model.json` is imported,
which registers its class. Adding a model is adding a folder; nothing else changes."""

from __future__ import annotations

import importlib
from functools import cache
from importlib import resources

from twin_stream.sdk.contract import ContractError, Model, load_manifest, registered_models


@cache
def discover_models(package: str = "models") -> dict[str, type[Model]]:
    """Import every `<package>/<name>/` that has a model.json; returns name -> class."""
    root = resources.files(package)
    found: list[str] = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("_") and (entry / "model.json").is_file():
            manifest = load_manifest(entry / "model.json")  # type: ignore[arg-type]
            if manifest.name != entry.name:
                raise ContractError(
                    f"{package}/{entry.name}/model.json names the model {manifest.name!r}; "
                    "the folder and the manifest name must agree"
                )
            importlib.import_module(f"{package}.{entry.name}")
            found.append(entry.name)
    models = registered_models()
    missing = [n for n in found if n not in models]
    if missing:
        raise ContractError(
            f"model folder(s) without a @register_model class: {', '.join(missing)}"
        )
    return {n: models[n] for n in found}
