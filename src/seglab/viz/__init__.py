"""Visualisation: coloured label maps, overlays, indexed label PNGs and diagnostic plots.
matplotlib is only imported when a plot is drawn."""
from .colorize import colorize, label_image, overlay, save_label_png
from .instances import draw_instances, instance_colors
from .panoptic import draw_panoptic, panoptic_colors, save_panoptic_prediction
from .plots import plot_confusion_matrix, plot_training_curves

__all__ = ["colorize", "draw_instances", "draw_panoptic", "instance_colors", "label_image", "overlay",
           "panoptic_colors", "plot_confusion_matrix", "plot_training_curves", "save_label_png",
           "save_panoptic_prediction"]
