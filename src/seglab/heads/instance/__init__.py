"""Heads of the instance segmentation models: proposal sampling, the region proposal network, the RoI
box/mask heads (Mask R-CNN), FCIS's position-sensitive head and YOLACT's prototype head."""
