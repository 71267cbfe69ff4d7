"""Discovery of models: every folder of the `models` package with a `model.json` is imported,
which registers its class; so is every module another installed package names in the entry
point group `twin_stream.models` (``[project.entry-points."twin_stream.models"] my_model =
"my_pkg.my_model"``). Adding a model is adding a folder (or installing a package); nothing
else changes."""

from __future__ import annotations

import importlib
from functools import cache
from importlib import metadata, resources

from twin_stream.sdk.contract import ContractError, Model, load_manifest, registered_models

ENTRY_POINTS = "twin_stream.models"


@cache
def discover_models(package: str = "models") -> dict[str, type[Model]]:
    """Import every `<package>/<name>/` that has a model.json (folders starting with _ are
    templates) and every entry point of `ENTRY_POINTS`; returns name -> class."""
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
    for ep in metadata.entry_points(group=ENTRY_POINTS):
        before = set(registered_models())
        try:
            ep.load()
        except Exception as exc:
            raise ContractError(
                f"entry point {ep.name} = {ep.value} ({ENTRY_POINTS}): cannot import: {exc}"
            ) from exc
        added = sorted(set(registered_models()) - before)
        if ep.name not in registered_models():
            raise ContractError(
                f"entry point {ep.name} = {ep.value} ({ENTRY_POINTS}) registered "
                f"{', '.join(added) or 'no model'}, not a model named {ep.name!r}"
            )
        if ep.name in found:
            raise ContractError(
                f"model {ep.name!r} is both a folder of {package} and an entry point"
            )
        found.append(ep.name)
    models = registered_models()
    return {n: models[n] for n in found}
