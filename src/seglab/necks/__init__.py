"""Context modules placed between a backbone and a classifier (DESIGN.md: necks/)."""
from .aspp import ASPP
from .criss_cross import CrissCrossAttention, RecurrentCrissCross
from .dense_aspp import DenseASPP
from .encoding import EncModule, Encoding
from .fpn import FeaturePyramidNetwork
from .graph_interaction import GraphInteractionUnit
from .graph_reasoning import GloRe, GraphConvolutionalUnit, ParallelGCU
from .holistic_decoder import HolisticallyGuidedDecoder
from .object_context import ASPOC, BaseOC, ObjectContext, PyramidOC, SelfAttentionBlock
from .panet import BottomUpPathAugmentation
from .ppm import PyramidPoolingModule
from .psa import PointwiseSpatialAttention, gather_window

__all__ = ["ASPOC", "ASPP", "BaseOC", "BottomUpPathAugmentation", "CrissCrossAttention", "DenseASPP", "EncModule",
           "Encoding", "FeaturePyramidNetwork", "GloRe", "GraphConvolutionalUnit", "GraphInteractionUnit",
           "HolisticallyGuidedDecoder", "ObjectContext", "ParallelGCU", "PointwiseSpatialAttention",
           "PyramidOC", "PyramidPoolingModule", "RecurrentCrissCross", "SelfAttentionBlock", "gather_window"]
