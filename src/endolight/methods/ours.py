"""Our DeepUPE model under the comparison's budget (same steps, batch, crop and pairs as every
comparator), with any loss weights: the ``full`` weights give the fair same-budget row, the
others the Figure-3 loss ablation. Same model and losses as ``endolight.train``, in the
step-based loop shared by all learned methods instead of the epoch loop of the shipped run.
"""

from __future__ import annotations

import torch

from endolight.losses import LossWeights, total_loss
from endolight.methods.learned import cosine_lr
from endolight.model import DeepUPE, ModelConfig

Config = ModelConfig
Net = DeepUPE

# The Figure-3 ablation. Our Ls has its own scale (edge-aware weights up to lambda / eps), so
# "2 Ls" means twice the project's default smoothness weight, not a raw weight of 2.
ABLATION: dict[str, LossWeights] = {
    "Lm": LossWeights(wm=1.0, wt=0.0, ws=0.0),
    "Lm + 2Ls": LossWeights(wm=1.0, wt=0.0, ws=2 * LossWeights().ws),
    "MAE + SSIM": LossWeights(wm=0.0, wt=1.0, ws=0.0),
    "full": LossWeights(),
}


class Trainer:
    def __init__(
        self, net: DeepUPE, steps: int, lr: float = 5e-4, weights: LossWeights | None = None
    ) -> None:
        self.net, self.weights = net, weights or LossWeights()
        self.opt = torch.optim.Adam(net.parameters(), lr=lr)
        self.sched = cosine_lr(self.opt, steps)

    def step(self, dim: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        pred = self.net(dim)
        terms = total_loss(pred.denoised, pred.illumination, pred.output, target, self.weights,
                           offset=self.net.cfg.black_offset)
        self.opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.opt.step()
        self.sched.step()
        return {k: v.item() for k, v in terms.items()}
