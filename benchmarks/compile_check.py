"""torch.compile against eager for BiSeNet V2 (CamVid recipe's 128-channel head, 11 classes): the largest
difference of the main and auxiliary outputs on one batch, dropout off, in the given precision, layout
and mode. docs/performance.md's "compiled forward" figures come from

    python benchmarks/compile_check.py bf16 cl train
    python benchmarks/compile_check.py fp32 cl train
"""
import sys
import time

import torch
from seglab.hub import create_model
torch.manual_seed(0)
m = create_model("bisenetv2", num_classes=11, head_channels=128, aux_loss=True)
bf16 = sys.argv[1] == "bf16"; cl = sys.argv[2] == "cl"; mode = sys.argv[3]
m.train(mode == "train")
if cl: m = m.to(memory_format=torch.channels_last)
x = torch.randn(2, 3, 96, 128)
if cl: x = x.contiguous(memory_format=torch.channels_last)
for mod in m.modules():
    if isinstance(mod, torch.nn.Dropout): mod.p = 0.0
c = torch.compile(m)
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
    # BN in train mode uses batch stats: outputs comparable; running stats updated twice (irrelevant here)
    a = m(x); t = time.time(); b = c(x); t = time.time() - t
ao = a["out"] if isinstance(a, dict) else a; bo = b["out"] if isinstance(b, dict) else b
print(sys.argv[1:], f"compile {t:.0f}s", "max|diff| out", (ao.float() - bo.float()).abs().max().item(), "max|out|", ao.float().abs().max().item())
if isinstance(a, dict):
    for i, (p, q) in enumerate(zip(a["aux"], b["aux"])): print(" aux", i, (p.float() - q.float()).abs().max().item())
