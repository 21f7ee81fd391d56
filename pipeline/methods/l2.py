"""The l2 baseline: CE + w·Σ(θ − θ(t−1))², weight 1, applied as an analytic gradient."""

from pipeline.losses import add_l2_gradient

from .base import Method, TaskContext


class L2(Method):
    name = "l2"
    uses_anchor = True

    def adjust_gradients(self, ctx: TaskContext):
        return {"l2": add_l2_gradient(ctx.params, ctx.anchors, self.config.l2_weight)}
