"""The LM head's per-token log-probabilities on a CPU (params.logprob_kernel, engine.kernels).

TRL 1.16's SFT, DPO, GRPO and RLOO trainers get their loss from a fused LM head (trl.trainer.utils.
add_fused_lm_head): the log-probability of each label without materializing the (batch, length, vocabulary)
logits. On a GPU a Triton kernel scores only the positions that have a label. Elsewhere TRL scores every position,
padding and prompts included, and folds each tile with a dozen full passes in fp32 (its matmuls in fp32 too):
on this 2-core CPU that head took a quarter of an SFT step. This is the same arithmetic for the CPU:
- only the positions with a label are scored (TRL's own `compact` path, which it keeps for Triton);
- a block of tokens at a time against the whole vocabulary (at most 2^23 logits, 32 MB, per block), the
  projection in the compute dtype (autocast's, as the model's own head would run), then log-sum-exp, the target's
  logit and the statistics TRL asks for (entropy, log sum p^2, mean logit, top-1) in fp32;
- the backward recomputes each block's logits (nothing of size vocabulary is kept) and multiplies by the weight.
Its outputs are TRL's (the same signature and fields: checked against TRL's own function in the tests), so
the trainers' losses and metrics do not change. Only CPU tensors take this path; anything else goes to TRL's.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch

BLOCK_LOGITS = 1 << 23  # logits per block of tokens (fp32: 32 MB)
_TRL_CALL = "compact = _use_triton(hidden_states.device)"  # the line of TRL's fused head this relies on


def _logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, logit_scale: float, softcap: float | None,
            inv_t: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A block's fp32 logits after TRL's transform (scale, optional tanh soft-capping, temperature), transformed
    in place (a fresh (tokens, vocabulary) buffer costs its page faults: each one counts on a CPU), and tanh's
    value for the backward."""
    z = torch.nn.functional.linear(h, w, b).float()
    if softcap is None:
        if logit_scale * inv_t != 1.0:
            z.mul_(logit_scale * inv_t)
        return z, None
    t = z.mul_(logit_scale / softcap).tanh_()
    z = t * (softcap * inv_t)
    return z, t


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b, -1) without the (tokens, vocabulary) product."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _block(vocab: int) -> int:
    return max(16, BLOCK_LOGITS // max(1, vocab))


class CpuLogProbs(torch.autograd.Function):
    """trl.kernels.ChunkedLogProbFunction's contract, for CPU tensors: (log_probs, entropy, log_sum_sq_probs,
    mean_logits, is_top1) of `hidden @ weight.T (+ bias)` at `targets`, the ones not in `outputs` None."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, temperature: float, chunk_size: int,
                final_logit_softcapping: float | None = None, logit_scale: float = 1.0,
                outputs: tuple[str, ...] = ("log_probs",)) -> tuple[Any, ...]:
        ctx.set_materialize_grads(False)  # entropy is usually logged only: no zero gradient made for it
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
        n, vocab = hidden.shape[0], weight.shape[0]
        step, inv_t = _block(vocab), 1.0 / temperature
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        f32 = dict(dtype=torch.float32, device=hidden.device)
        log_probs, log_z = torch.empty(n, **f32), torch.empty(n, **f32)
        entropy = torch.empty(n, **f32) if "entropy" in outputs else None
        sum_sq = torch.empty(n, **f32) if "log_sum_sq_probs" in outputs else None
        mean = torch.empty(n, **f32) if "mean_logits" in outputs else None
        top1 = torch.empty(n, dtype=torch.bool, device=hidden.device) if "is_top1" in outputs else None
        with torch.autocast("cpu", enabled=False):
            for s in range(0, n, step):
                e = min(n, s + step)
                z, _ = _logits(hidden[s:e].to(dtype), w, b, logit_scale, final_logit_softcapping, inv_t)
                if mean is not None:
                    mean[s:e] = z.mean(-1)
                if top1 is not None:  # argmax is the first maximum: a tie with an earlier token is not top-1 (TRL's)
                    top1[s:e] = z.argmax(-1) == targets[s:e]
                peak = z.amax(-1)
                target = z.gather(-1, targets[s:e, None])[:, 0] - peak
                shifted = z.sub_(peak[:, None])  # z - max: every exp below is at most 1
                exp = torch.exp(shifted) if entropy is not None else torch.exp_(shifted)
                total = exp.sum(-1)
                log_total = torch.log(total)
                log_z[s:e] = peak + log_total
                log_probs[s:e] = target - log_total
                if entropy is not None:  # H = log S - sum(e * (z - max)) / S
                    entropy[s:e] = log_total - _rowdot(exp, shifted) / total
                if sum_sq is not None:  # log sum p^2 = log sum e^2 - 2 log S
                    sum_sq[s:e] = torch.log(_rowdot(exp, exp)) - 2 * log_total
        ctx.save_for_backward(hidden, weight, bias, targets, log_z, log_z if entropy is None else entropy)
        ctx.setup = (dtype, step, final_logit_softcapping, logit_scale, inv_t, entropy is not None)
        ctx.mark_non_differentiable(*(x for x in (sum_sq, mean, top1) if x is not None))
        return log_probs, entropy, sum_sq, mean, top1

    @staticmethod
    def backward(ctx: Any, grad_log_probs: torch.Tensor | None, grad_entropy: torch.Tensor | None,
                 *_: Any) -> tuple[Any, ...]:
        hidden, weight, bias, targets, log_z, entropy = ctx.saved_tensors
        dtype, step, softcap, logit_scale, inv_t, has_entropy = ctx.setup
        wants_hidden, wants_weight, wants_bias = ctx.needs_input_grad[:3]
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        grad_hidden = torch.empty_like(hidden) if wants_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32) if wants_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32) if wants_bias and bias is not None else None
        entropy_grad = grad_entropy is not None and has_entropy
        with torch.autocast("cpu", enabled=False):
            for s in range(0, hidden.shape[0], step):
                e = min(hidden.shape[0], s + step)
                h = hidden[s:e].to(dtype)
                z, t = _logits(h, w, b, logit_scale, softcap, inv_t)
                log_p = z.sub_(log_z[s:e, None])
                # d log p_target / dz_j = [j = target] - p_j;  d H / dz_j = -p_j (log p_j + H)
                if entropy_grad:
                    p = torch.exp(log_p)
                    g = log_p.add_(entropy[s:e, None]).mul_(p).mul_(-grad_entropy[s:e, None])
                    if grad_log_probs is not None:
                        g.sub_(p.mul_(grad_log_probs[s:e, None]))
                elif grad_log_probs is not None:
                    g = torch.exp_(log_p).mul_(-grad_log_probs[s:e, None])
                else:
                    g = log_p.zero_()
                if grad_log_probs is not None:
                    g.scatter_add_(-1, targets[s:e, None], grad_log_probs[s:e, None].float())
                if logit_scale * inv_t != 1.0:
                    g.mul_(inv_t * logit_scale)
                if t is not None:
                    g.mul_(1 - t * t)
                g_low = g.to(dtype)
                if grad_hidden is not None:
                    grad_hidden[s:e] = (g_low @ w).to(hidden.dtype)
                if grad_weight is not None:
                    grad_weight += (g_low.t() @ h).float()
                if grad_bias is not None:
                    grad_bias += g.sum(0)
        return (grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype),
                None if grad_bias is None else grad_bias.to(bias.dtype), None, None, None, None, None, None)


def trl_head_refusal() -> str | None:
    """Why TRL's fused LM head cannot take this head here, or None: it relies on two names of
    trl.trainer.utils and on the line that decides to score only labelled positions."""
    try:
        import trl.trainer.utils as trl_utils
    except Exception as e:  # pragma: no cover - TRL is a dependency
        return f"trl.trainer.utils does not import ({e})"
    if not all(hasattr(trl_utils, n) for n in ("_ChunkedLogProbFunction", "_use_triton", "add_fused_lm_head")):
        return "this TRL has no fused LM head of the kind llmtune knows (trl.trainer.utils.add_fused_lm_head)"
    try:
        source = inspect.getsource(trl_utils.add_fused_lm_head)
    except OSError:
        return "TRL's fused LM head has no readable source to check"
    if _TRL_CALL not in source:
        return "TRL's fused LM head changed (it no longer decides `compact` as llmtune expects)"
    return None


class _Dispatch:
    """Stands in for TRL's function: CPU tensors to CpuLogProbs, the rest to TRL's own."""

    trl_function: Any = None

    @classmethod
    def apply(cls, hidden: torch.Tensor, *args: Any) -> Any:
        if hidden.device.type == "cpu":
            return CpuLogProbs.apply(hidden, *args)
        return cls.trl_function.apply(hidden, *args)


@contextlib.contextmanager
def cpu_logprob_head() -> Iterator[None]:
    """While inside, TRL's fused LM head scores only labelled positions on the CPU, with CpuLogProbs. The two
    names are restored on leaving (one process may train several runs: the tests do)."""
    import trl.trainer.utils as trl_utils

    function, use_triton = trl_utils._ChunkedLogProbFunction, trl_utils._use_triton
    _Dispatch.trl_function = function
    trl_utils._ChunkedLogProbFunction = _Dispatch
    trl_utils._use_triton = lambda device: device.type == "cpu" or use_triton(device)
    try:
        yield
    finally:
        trl_utils._ChunkedLogProbFunction, trl_utils._use_triton = function, use_triton
