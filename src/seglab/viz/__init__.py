"""Visualisation: coloured label maps, overlays, indexed label PNGs and diagnostic plots.
matplotlib is only imported when a plot is drawn."""
from .colorize import colorize, label_image, overlay, save_label_png
from .instances import draw_instances, instance_colors
from .plots import plot_confusion_matrix, plot_training_curves

__all__ = ["colorize", "overlay", "label_image", "save_label_png", "plot_confusion_matrix",
           "plot_training_curves", "draw_instances", "instance_colors"]
