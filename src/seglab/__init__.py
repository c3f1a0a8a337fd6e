"""seglab: semantic, instance and panoptic segmentation in one small, readable PyTorch package."""
from .api import predict
from .errors import SeglabError
from .hub import create_model, load_model, save_model
from .pretrained import list_pretrained
from .registry import list_models, register_model

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "list_pretrained", "load_model", "save_model", "predict", "register_model",
           "SeglabError",
           "__version__"]
