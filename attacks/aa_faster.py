"""AutoAttack's FAB-T and Square (torchattacks' ports of Croce & Hein's code) without the work
whose answers are already known or never used: the same algorithm, the same random draws, the
same adversarial examples (tools/aa_versus_original.py compares them image by image
with the authors' own package).

* **Square (L∞)** proposes, at every query, the current best image with one square of it set to
  ±ε. Where that square already holds that sign everywhere (late in the schedule the square is a
  pixel or two: about 3 queries in 10 on MNIST), the proposal *is* the current best, whose margin
  and loss are stored: the original queries the model for them again, this form does not. The
  acceptance rule then sees equal values and keeps the image, as the original does.
* **FAB-T** linearises the model at every step with ``backward()``, which also computes and
  accumulates the gradient of every weight that requires one (a defense's generator, a user's
  classifier): here the backward pass asks for the input's gradient only (``torch.autograd.grad``),
  as APGD does. (Reusing the forward pass of FAB's adversarial check for the next step's gradient
  was measured and dropped: keeping its graph cost more than it saved, the point moving at nearly
  every step on the PGD-trained classifier.)

Square counts the passes it really makes (``bench.run.passes``).
"""

from __future__ import annotations

import math

import torch
import torchattacks


class Square(torchattacks.Square):
    """torchattacks.Square; under L∞ a proposal equal to the current best is not queried."""

    def attack_single_run(self, x, y):
        if self.norm != "Linf":
            return super().attack_single_run(x, y)
        with torch.no_grad():
            c, h, w = x.shape[1:]
            n_features = c * h * w
            n_ex_total = x.shape[0]
            # The original's draws, in its order: the stripes, then per query the square's corner
            # and its sign per channel (every draw is made whether or not the model is queried).
            x_best = torch.clamp(x + self.eps * self.random_choice([x.shape[0], c, 1, w]), 0.0, 1.0)
            margin_min, loss_min = self.margin_and_loss(x_best, y)
            n_queries = torch.ones(x.shape[0]).to(self.device)
            for i_iter in range(self.n_queries):
                idx_to_fool = (margin_min > 0.0).nonzero().flatten()
                if len(idx_to_fool) == 0:
                    break
                x_curr = self.check_shape(x[idx_to_fool])
                x_best_curr = self.check_shape(x_best[idx_to_fool])
                y_curr = y[idx_to_fool]
                if len(y_curr.shape) == 0:
                    y_curr = y_curr.unsqueeze(0)
                margin_min_curr = margin_min[idx_to_fool]
                loss_min_curr = loss_min[idx_to_fool]

                p = self.p_selection(i_iter)
                s = max(round(math.sqrt(p * n_features / c)), 1)
                vh = self.random_int(0, h - s)
                vw = self.random_int(0, w - s)
                new_deltas = torch.zeros([c, h, w]).to(self.device)
                new_deltas[:, vh : vh + s, vw : vw + s] = 2.0 * self.eps * self.random_choice([c, 1, 1])
                x_new = x_best_curr + new_deltas
                x_new = torch.min(torch.max(x_new, x_curr - self.eps), x_curr + self.eps)
                x_new = self.check_shape(torch.clamp(x_new, 0.0, 1.0))

                # The one change: only proposals that differ from the current best are queried.
                fresh = (x_new != x_best_curr).flatten(1).any(1)
                margin, loss = margin_min_curr.clone(), loss_min_curr.clone()
                if bool(fresh.any()):
                    margin[fresh], loss[fresh] = self.margin_and_loss(x_new[fresh], y_curr[fresh])

                idx_improved = (loss < loss_min_curr).float()
                loss_min[idx_to_fool] = idx_improved * loss + (1.0 - idx_improved) * loss_min_curr
                idx_miscl = (margin <= 0.0).float()
                idx_improved = torch.max(idx_improved, idx_miscl)
                margin_min[idx_to_fool] = idx_improved * margin + (1.0 - idx_improved) * margin_min_curr
                idx_improved = idx_improved.reshape([-1, *[1] * len(x.shape[:-1])])
                x_best[idx_to_fool] = idx_improved * x_new + (1.0 - idx_improved) * x_best_curr
                n_queries[idx_to_fool] += 1.0

                ind_succ = (margin_min <= 0.0).nonzero().squeeze()
                if ind_succ.numel() == n_ex_total:
                    break
        return n_queries, x_best


class FAB(torchattacks.FAB):
    """torchattacks.FAB; its gradients are the input's only."""

    def get_diff_logits_grads_batch_targeted(self, imgs, la, la_target):
        u = torch.arange(imgs.shape[0])
        im = imgs.clone().requires_grad_()
        with torch.enable_grad():
            y = self.get_logits(im)
            diffy = -(y[u, la] - y[u, la_target])
            (grad,) = torch.autograd.grad(diffy.sum(), [im])
        return diffy.detach().unsqueeze(1), grad.unsqueeze(1)
