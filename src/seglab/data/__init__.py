"""Data: image / label reading, the standard segmentation data sets, joint transforms, palettes,
class statistics and a generated synthetic stuff-and-things set (see each module for its sources)."""
from .datasets import (ADE20K, DATASETS, CamVid, Cityscapes, SegmentationDataset, SegmentationFolder,
                       SyntheticSegmentation, VOCSegmentation, build_dataset)
from .hha import NYU_KINECT_INTRINSICS, depth_to_hha
from .io import read_image, read_label, read_photo
from .nyudv2 import NYUDV2_CLASSES, NYUDv2, modality_mean_std, write_hha
from .palettes import (ADE20K_CLASSES, ADE20K_PALETTE, CAMVID_CLASSES, CAMVID_PALETTE, CITYSCAPES_CLASSES,
                       CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_PALETTE, VOC_CLASSES, VOC_PALETTE,
                       default_palette)
from .siftflow import (SIFTFLOW_GEOMETRIC_CLASSES, SIFTFLOW_SEMANTIC_CLASSES, JointLabelDataset, SIFTFlow,
                       SyntheticJoint)
from .statistics import class_statistics
from .synthetic import (SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, SYNTHETIC_STUFF_IDS, SYNTHETIC_THING_CLASSES,
                        SYNTHETIC_THING_IDS, generate_synthetic)
from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, normalize_image
from .image_labels import (ImageLabelDataset, ImageLabelsFromMasks, image_labels_from_masks,
                           read_image_labels, write_image_labels)
from .coco_masks import mask_to_rle, polygons_to_mask, rle_to_mask, segmentation_to_mask
from .datasets import (PANOPTIC_DATASETS, CityscapesInstances, CityscapesPanoptic, CocoInstances, InstanceFolder,
                       PanopticDataset, SyntheticInstances, SyntheticPanoptic, seeded_split)
from .panoptic import (cityscapes_instance_ids_to_panoptic, id2rgb, load_panoptic_json, panoptic_to_instances,
                       panoptic_to_semantic, read_panoptic, rgb2id, save_panoptic_json, semantic_instance_to_panoptic,
                       write_panoptic)
from .instances import (InstanceDataset, InstanceEvalTransform, InstanceTrainTransform, collate_instances,
                        masks_to_boxes)

IGNORE_INDEX = 255

__all__ = [
    "read_image", "read_label", "read_photo", "SegmentationDataset", "SegmentationFolder", "CamVid", "VOCSegmentation",
    "Cityscapes", "ADE20K", "SyntheticSegmentation", "build_dataset", "DATASETS", "generate_synthetic",
    "SYNTHETIC_CLASSES", "SYNTHETIC_PALETTE", "SYNTHETIC_THING_IDS", "SYNTHETIC_THING_CLASSES",
    "SYNTHETIC_STUFF_IDS", "TrainTransform", "EvalTransform", "normalize_image", "IMAGENET_MEAN",
    "IMAGENET_STD", "default_palette", "class_statistics", "IGNORE_INDEX",
    "CAMVID_CLASSES", "CAMVID_PALETTE", "VOC_CLASSES", "VOC_PALETTE", "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE", "CITYSCAPES_ID_TO_TRAIN_ID", "ADE20K_CLASSES", "ADE20K_PALETTE",
    "ImageLabelDataset", "ImageLabelsFromMasks", "image_labels_from_masks", "read_image_labels",
    "write_image_labels",
    "JointLabelDataset", "SIFTFlow", "SyntheticJoint", "SIFTFLOW_SEMANTIC_CLASSES", "SIFTFLOW_GEOMETRIC_CLASSES",
    "NYUDv2", "NYUDV2_CLASSES", "modality_mean_std", "write_hha", "depth_to_hha", "NYU_KINECT_INTRINSICS",
    "InstanceDataset", "CocoInstances", "CityscapesInstances", "SyntheticInstances", "InstanceFolder",
    "seeded_split", "InstanceTrainTransform",
    "InstanceEvalTransform", "collate_instances", "masks_to_boxes", "polygons_to_mask", "rle_to_mask",
    "segmentation_to_mask", "mask_to_rle",
    "PANOPTIC_DATASETS", "PanopticDataset", "CityscapesPanoptic", "SyntheticPanoptic", "id2rgb", "rgb2id",
    "read_panoptic", "write_panoptic", "load_panoptic_json", "save_panoptic_json", "semantic_instance_to_panoptic",
    "panoptic_to_semantic", "panoptic_to_instances", "cityscapes_instance_ids_to_panoptic",
]
