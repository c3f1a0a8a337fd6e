"""`python -m seglab ...` (and `torchrun --nproc-per-node N -m seglab train CONFIG`): the `seglab` command."""
import sys

from .cli import main

sys.exit(main())
