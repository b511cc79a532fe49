"""Multi-head self-attention and a transformer encoder block, forward + backward, float32, on the CPU: ours
(the fused Numba softmax and LayerNorm kernels, and the NumPy reference) against `torch.nn.MultiheadAttention`
and the same block built from PyTorch modules, on the same number of threads; medians over repeated runs.

    python benchmarks/attention.py [--repeat 7] [--threads 2]     # or: make bench

Cases (chapter 13's sizes): B 32, T 128, d_model 128, 4 heads, causal self-attention; then one pre-norm encoder
block (LayerNorm -> attention -> residual, LayerNorm -> ReLU feed-forward of width 512 -> residual), causal as in
a decoder-only language model. One timed run = forward in training mode + backward (gradients of the input and of
every weight) for a given dL/dy. Goal: <= 1.2x PyTorch. A second table times the softmax and LayerNorm kernels
alone against their NumPy references at the same sizes. PyTorch runs in a process of its own, without the
OpenMP spin setting this package makes for itself (see benchmarks/conv.py). Without torch its columns are left out.
"""
from __future__ import annotations
import argparse, os, sys
# Before NumPy loads: OpenBLAS's idle threads must sleep at once, or they starve the Numba kernels (nbs/00_core).
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time, in_clean_process

B, T, D, HEADS, D_FF = 32, 128, 128, 4, 512


def _data(seed=0):
    "The input x and the gradient dL/dy, (B, T, D) float32."
    r = np.random.default_rng(seed)
    return r.standard_normal((B, T, D), dtype=np.float32), r.standard_normal((B, T, D), dtype=np.float32)


def ours_steps(backend: str) -> dict:
    "Closures running forward (training) + backward of our attention layer and encoder block on `backend`."
    from dl_from_scratch.attention import MultiHeadAttention, TransformerEncoderBlock, LayerNorm
    x, g = _data()
    mha = MultiHeadAttention(HEADS, causal=True, rng=0, backend=backend)
    block = TransformerEncoderBlock(HEADS, D_FF, norm_first=True, causal=True, rng=0)
    block(x[:1])
    for layer in block.layers:                        # the block's attention and LayerNorms on this backend
        if isinstance(layer, (MultiHeadAttention, LayerNorm)): layer.backend = backend
    mha(x[:1])
    def step(layer):
        def run():
            layer.forward(x, training=True); layer.backward(g)
        return run
    return {'attention': step(mha), 'block': step(block)}


def kernel_steps() -> list:
    "(name, NumPy reference closure, Numba kernel closure) for the softmax and LayerNorm at the benchmark's sizes."
    from dl_from_scratch.attention import masked_softmax, causal_mask, layer_norm_reference, layer_norm_reference_backward
    from dl_from_scratch.functional import softmax_vjp
    from dl_from_scratch.kernels import attention as K
    r = np.random.default_rng(1)
    S = r.standard_normal((B, HEADS, T, T), dtype=np.float32)
    dP = r.standard_normal(S.shape, dtype=np.float32)
    scale, cm = 1 / np.sqrt(D // HEADS), causal_mask(T)
    P = K.softmax_forward(S, None, True, scale, 'numba')
    x, dy = _data(2)
    gamma, beta = np.ones(D, np.float32), np.zeros(D, np.float32)
    _, xhat, s = layer_norm_reference(x, gamma, beta)
    out = np.empty_like(S)
    return [
        ('softmax forward, causal', lambda: masked_softmax(S * scale, cm),
         lambda: K.softmax_forward(S, None, True, scale, 'numba', out=out)),
        ('softmax backward', lambda: softmax_vjp(P, dP) * scale,
         lambda: K.softmax_backward(P, dP, True, scale, 'numba', out=out)),
        ('LayerNorm forward', lambda: layer_norm_reference(x, gamma, beta),
         lambda: K.layer_norm_forward(x, gamma, beta, 1e-5, 'numba')),
        ('LayerNorm backward', lambda: layer_norm_reference_backward(dy, xhat, s, gamma),
         lambda: K.layer_norm_backward(dy, xhat, s, gamma, 'numba')),
    ]


def torch_steps(torch) -> dict:
    "The same two cases in PyTorch (CPU): nn.MultiheadAttention with a causal mask, and a pre-norm encoder block."
    nn = torch.nn
    x, g = _data()
    xt, gt = torch.tensor(x, requires_grad=True), torch.tensor(g)
    mask = nn.Transformer.generate_square_subsequent_mask(T)
    mha = nn.MultiheadAttention(D, HEADS, batch_first=True)
    block = nn.TransformerEncoderLayer(D, HEADS, D_FF, dropout=0.0, activation='relu', batch_first=True, norm_first=True)
    def run_mha():
        y, _ = mha(xt, xt, xt, attn_mask=mask, need_weights=False, is_causal=True)
        xt.grad = None; mha.zero_grad(); y.backward(gt)
    def run_block():
        y = block(xt, src_mask=mask, is_causal=True)
        xt.grad = None; block.zero_grad(); y.backward(gt)
    return {'attention': run_mha, 'block': run_block}


def torch_times(repeat: int, threads: int) -> dict:
    "PyTorch's seconds per case; run by `torch_in_own_process` in a fresh process."
    import torch                     # first: its OpenMP starts with the environment as given
    torch.set_num_threads(threads)
    return {k: median_time(f, repeat) for k, f in torch_steps(torch).items()}


def torch_in_own_process(repeat: int, threads: int) -> dict:
    "`torch_times` in a fresh process (`_timing.in_clean_process`); {} when torch is not installed."
    return in_clean_process('attention', f'torch_times({repeat}, {threads})') or {}


def main(repeat: int = 7, threads: int = 2) -> list[dict]:
    from dl_from_scratch.core import set_num_threads
    set_num_threads(threads)
    theirs = torch_in_own_process(repeat, threads)
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f"\n== attention, forward + backward, float32, CPU ({threads} threads; load average {load:.1f} on "
          f"{os.cpu_count()} cores) ==")
    print(f"B {B}, T {T}, d_model {D}, {HEADS} heads, causal; the block: pre-norm, d_ff {D_FF}" +
          ("" if theirs else "; torch not installed"))
    ours, ref = ours_steps('auto'), ours_steps('numpy')
    head = f"{'case':<34}{'ours ms':>10}{'numpy ms':>10}{'torch ms':>10}{'vs torch':>10}"
    print(head); print('-' * len(head))
    rows = []
    for name, label in (('attention', 'multi-head self-attention'), ('block', 'encoder block (pre-norm)')):
        row = dict(case=label, ours=median_time(ours[name], repeat), numpy=median_time(ref[name], repeat),
                   torch=theirs.get(name, float('nan')))
        rows.append(row)
        print(f"{label:<34}{row['ours']*1e3:>10.2f}{row['numpy']*1e3:>10.2f}{row['torch']*1e3:>10.2f}"
              f"{row['ours']/row['torch']:>9.2f}x")
    print("ours: the fused Numba kernels (backend 'auto'); numpy: the same layers on the NumPy reference.")
    print("vs torch: our time / PyTorch's (< 1 is faster). Goal: <= 1.2x.")
    print(f"\n== the kernels alone: scores ({B}, {HEADS}, {T}, {T}), LayerNorm rows ({B * T}, {D}) ==")
    head = f"{'kernel':<34}{'numpy ms':>10}{'numba ms':>10}{'numpy/numba':>12}"
    print(head); print('-' * len(head))
    for name, f_ref, f_k in kernel_steps():
        row = dict(case=name, numpy=median_time(f_ref, repeat), numba=median_time(f_k, repeat))
        rows.append(row)
        print(f"{name:<34}{row['numpy']*1e3:>10.2f}{row['numba']*1e3:>10.2f}{row['numpy']/row['numba']:>12.1f}")
    return rows


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--repeat', type=int, default=7)
    p.add_argument('--threads', type=int, default=2, help='threads for Numba, OpenBLAS and PyTorch')
    a = p.parse_args()
    main(a.repeat, a.threads)
