"""Model families, one module each. Importing this package imports every module in it, which runs
their `@register_model` decorators; a new family only needs a new file here."""
import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
