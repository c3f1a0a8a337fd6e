"""The opening of the benchmarks that inspect a trained model on its validation images: a recipe with
`key=value` overrides, `--checkpoint` and `--threads` on the command line, then the model and the
validation set they name."""
from __future__ import annotations

import argparse

import torch

import seglab
from seglab.config import Config, load_config
from seglab.engine import build_datasets


def checkpoint_parser(description: str, checkpoint_help: str) -> argparse.ArgumentParser:
    """The shared arguments; a benchmark adds its own before parsing."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--checkpoint", required=True, help=checkpoint_help)
    p.add_argument("--threads", type=int, default=2)
    return p


def load_checkpoint_and_val(args: argparse.Namespace) -> tuple[Config, torch.nn.Module, object]:
    """(config, model in eval mode, validation data set), with torch's threads set as asked."""
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    _, val = build_datasets(cfg, train=False)
    return cfg, seglab.load_model(args.checkpoint).eval(), val
