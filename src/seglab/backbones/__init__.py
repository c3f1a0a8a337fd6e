"""Backbones: `forward(x) -> list[Tensor]` with `.out_channels` and `.strides`."""
from .base import create_backbone, list_backbones, register_backbone
from .hrnet import HRNet, hrnet_w18, hrnet_w48
from .resnet import ResNet, resnet18, resnet34, resnet50, resnet101
from .vgg import VGG, vgg16
from .xception import Xception65, xception65
from .mobilenet import MobileNetV2, mobilenetv2
from .detnet import DetNet, detnet59
from .densenet import DenseNet, densenet121, densenet161

__all__ = ["create_backbone", "list_backbones", "register_backbone", "ResNet", "VGG",
           "resnet18", "resnet34", "resnet50", "resnet101", "vgg16",
           "HRNet", "hrnet_w18", "hrnet_w48",
           "Xception65", "xception65", "MobileNetV2", "mobilenetv2", "DetNet", "detnet59",
           "DenseNet", "densenet121", "densenet161"]
