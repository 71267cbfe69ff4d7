"""template_model: the skeleton `twin-stream models new NAME` copies (see model.py)."""

from models._template.model import TemplateModel

__all__ = ["TemplateModel"]
