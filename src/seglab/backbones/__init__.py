"""Backbones: `forward(x) -> list[Tensor]` with `.out_channels` and `.strides`."""
from .base import create_backbone, list_backbones, register_backbone
from .resnet import ResNet, resnet18, resnet34, resnet50, resnet101
from .vgg import VGG, vgg16

__all__ = ["create_backbone", "list_backbones", "register_backbone", "ResNet", "VGG",
           "resnet18", "resnet34", "resnet50", "resnet101", "vgg16"]
