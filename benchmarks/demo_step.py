"""One training step of the demo's network (half-width BiSeNet V2, batch 8, aux heads, AdamW) in fp32 and
bf16 autocast, NCHW and channels-last: milliseconds per step, best of 3 x 5 steps after 3 warm-up steps.
The figures of docs/performance.md's demo table ("channels-last", "bf16 autocast") come from

    python benchmarks/demo_step.py 96
"""
import sys
import time

import torch
from seglab.hub import create_model
from seglab.losses import SegmentationLoss
torch.manual_seed(0)
m = create_model("bisenetv2", num_classes=6, width_mult=0.5, head_channels=64, aux_loss=True).train()
crit = SegmentationLoss(ignore_index=255, aux_weight=1.0)
opt = torch.optim.AdamW(m.parameters(), 1e-3)
S=int(sys.argv[1]) if len(sys.argv)>1 else 128
x = torch.randn(8,3,S,S); y = torch.randint(0,6,(8,S,S))
def step(bf16, cl):
    xx = x.contiguous(memory_format=torch.channels_last) if cl else x
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = m(xx)
    out = {"out": out["out"].float(), "aux": [a.float() for a in out["aux"]]}
    loss = crit(out, y)["loss"]; opt.zero_grad(); loss.backward(); opt.step()
res = {}
for cl in (False, True):
    m.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
    for bf16 in (False, True):
        for _ in range(3): step(bf16, cl)
        ts=[]
        for _ in range(3):
            t=time.perf_counter()
            for _ in range(5): step(bf16, cl)
            ts.append((time.perf_counter()-t)/5)
        res[(bf16,cl)] = min(ts)
for k,v in res.items(): print(f"bf16={k[0]} cl={k[1]}: {v*1000:.0f} ms/step")
