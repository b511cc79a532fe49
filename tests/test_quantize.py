"""The NumPy inference plan against Model.predict, quantisation's error bounds, and the int8 product's three
backends (NumPy, Numba CPU, CUDA in the simulator) against each other."""
import inspect, os, subprocess, sys
import numpy as np
import pytest
from dl_from_scratch.core import simulate_cuda_without_gpu
simulate_cuda_without_gpu()
from dl_from_scratch import layers, conv
from dl_from_scratch.layers import Dense, Flatten, Dropout, BatchNorm, Activation, ReLU, Embedding
from dl_from_scratch.conv import Conv2D, MaxPool2D, AvgPool2D, GlobalAveragePooling2D
from dl_from_scratch.model import Sequential
from dl_from_scratch.quantize import (InferencePlan, numpy_predict, quantize_symmetric, dequantize, activation_scale,
                                      quantize_activations, int8_matmul, fold_batchnorm, quantize_plan, im2col, pool2d,
                                      resolve_padding, INT8_MAX_K, _POSITIONAL)


def net(rng=0):
    return Sequential([Conv2D(4, 3, strides=2, padding='same', rng=rng), BatchNorm(), Activation('relu'),
                       MaxPool2D(3, strides=1, padding='same'), Conv2D(5, 2, dilation_rate=2, activation='elu', rng=rng),
                       AvgPool2D(2, padding='same'), Dropout(0.5, rng=rng), Conv2D(6, 1, use_bias=False, rng=rng),
                       GlobalAveragePooling2D(), Dense(8, activation='leaky_relu', rng=rng), ReLU(max_value=0.3),
                       Dense(3, rng=rng)], input_shape=(11, 9, 2), name='net')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    m = net()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 11, 9, 2)).astype(np.float32)
    m.compile(loss='mse', optimizer='adam')
    m.fit(x, rng.normal(size=(16, 3)).astype(np.float32), epochs=2, batch_size=4, rng=0, verbose=0)
    path = m.save(tmp_path_factory.mktemp('q') / 'net.npz')
    return m, x, path


def test_plan_matches_model_predict(trained):
    m, x, path = trained
    ref = m.predict(x)
    np.testing.assert_allclose(InferencePlan.from_checkpoint(path).predict(x, batch_size=5), ref, atol=1e-5)
    np.testing.assert_allclose(InferencePlan.from_model(m).predict(x), ref, atol=1e-5)
    np.testing.assert_allclose(numpy_predict(path, x), ref, atol=1e-5)


def test_plan_saves_and_loads(trained, tmp_path):
    m, x, path = trained
    plan = InferencePlan.from_checkpoint(path)
    p = plan.save(tmp_path / 'plan')
    np.testing.assert_array_equal(InferencePlan.load(p).predict(x), plan.predict(x))
    with pytest.raises(ValueError, match='not an inference plan'): InferencePlan.load(path)


def test_positional_table_matches_signatures():
    for name, params in _POSITIONAL.items():
        cls = getattr(layers, name, None) or getattr(conv, name)
        assert tuple(inspect.signature(cls).parameters)[:len(params)] == params, name


def test_plan_refuses_what_it_cannot_run(trained):
    m, x, path = trained
    with pytest.raises(ValueError, match="got 'Embedding'"):
        InferencePlan.from_model(Sequential([Embedding(5, 2), Flatten()], input_shape=(3,)))
    with pytest.raises(ValueError, match=r'\(N, 11, 9, 2\), got \(2, 9, 11, 2\)'):
        InferencePlan.from_checkpoint(path).predict(np.zeros((2, 9, 11, 2)))
    with pytest.raises(ValueError, match='batch_size >= 1'):
        InferencePlan.from_checkpoint(path).predict(x, batch_size=0)


def test_plan_runs_without_numba(trained, tmp_path):
    m, x, path = trained
    np.save(tmp_path / 'x.npy', x)
    code = f"""
import sys, numpy as np
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'numba': raise ImportError('blocked')
sys.meta_path.insert(0, Block())
from dl_from_scratch.quantize import numpy_predict
np.save({str(tmp_path / 'y.npy')!r}, numpy_predict({str(path)!r}, np.load({str(tmp_path / 'x.npy')!r})))
print('numba' in sys.modules)
"""
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == 'False', r.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / 'y.npy'), m.predict(x), atol=1e-5)


@pytest.mark.parametrize('padding,strides,field,dilation', [('same', (2, 2), (3, 3), (1, 1)), ('valid', (1, 2), (2, 3), (1, 1)),
                                                        ((1, 2), (1, 1), (3, 3), (1, 1)), ('valid', (1, 1), (2, 2), (2, 3))])
def test_im2col_and_pooling_against_loops(padding, strides, field, dilation):
    x = np.random.default_rng(1).normal(size=(2, 7, 8, 3))
    span = tuple((k - 1) * d + 1 for k, d in zip(field, dilation))
    pad = resolve_padding(padding, (7, 8), span, strides)
    cols = im2col(x, field, strides, pad, dilation)
    xp = np.pad(x, ((0, 0), pad[:2], pad[2:], (0, 0)))
    xm = np.pad(x, ((0, 0), pad[:2], pad[2:], (0, 0)), constant_values=-np.inf)
    n = np.pad(np.ones((7, 8)), (pad[:2], pad[2:]))
    mx = pool2d(x, 'max', field, strides, pad) if dilation == (1, 1) else None
    av = pool2d(x, 'avg', field, strides, pad) if dilation == (1, 1) else None
    for i in range(cols.shape[1]):
        for j in range(cols.shape[2]):
            h, w = i * strides[0], j * strides[1]
            win = xp[:, h:h + span[0]:dilation[0], w:w + span[1]:dilation[1]]
            np.testing.assert_array_equal(cols[:, i, j], win.reshape(2, -1))
            if mx is not None:
                np.testing.assert_array_equal(mx[:, i, j], xm[:, h:h + field[0], w:w + field[1]].max(axis=(1, 2)))
                np.testing.assert_allclose(av[:, i, j], win.sum(axis=(1, 2)) / n[h:h + field[0], w:w + field[1]].sum())


def test_quantize_symmetric_bounds():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(6, 7)) * np.logspace(-3, 1, 7)
    for axis, bits in [(-1, 8), (0, 8), (None, 8), (-1, 4)]:
        q, s = quantize_symmetric(w, axis, bits)
        assert q.dtype == np.int8 and np.abs(q).max() <= 2 ** (bits - 1) - 1
        err = np.abs(dequantize(q, s, axis) - w)
        bound = (s if axis is None else np.expand_dims(s, tuple(a for a in range(2) if a != axis % 2))) / 2
        assert (err <= bound + 1e-7).all()
    with pytest.raises(ValueError, match='finite'): quantize_symmetric(np.array([np.inf]))
    with pytest.raises(ValueError, match='bits <= 8'): quantize_symmetric(w, bits=16)


def test_activation_scale_and_codes():
    a = np.r_[np.linspace(-1, 1, 1001), 40.0]
    assert activation_scale(a) == pytest.approx(40 / 127)
    assert activation_scale(a, 'percentile', 99.0) == pytest.approx(np.percentile(np.abs(a), 99) / 127)
    np.testing.assert_array_equal(quantize_activations(np.array([-3.0, -0.004, 0.006, 3.0]), 0.01), [-127, 0, 1, 127])
    with pytest.raises(ValueError, match='percentile <= 100'): activation_scale(a, 'percentile', 0)


@pytest.mark.parametrize('M,K,N', [(1, 1, 1), (5, 17, 3), (4, 300, 6), (0, 4, 2), (3, 0, 2)])
def test_int8_matmul_backends_agree(M, K, N):
    rng = np.random.default_rng(M * 100 + K + N)
    a = rng.integers(-128, 128, (M, K)).astype(np.int8)
    b = rng.integers(-128, 128, (K, N)).astype(np.int8)
    want = a.astype(np.int64) @ b.astype(np.int64)
    for backend in ('numpy', 'numba', 'cuda'):
        c = int8_matmul(a, b, backend)
        assert c.dtype == np.int32 and c.shape == (M, N)
        np.testing.assert_array_equal(c, want)


def test_int8_matmul_extremes_and_errors():
    a = np.full((1, INT8_MAX_K), -128, np.int8)
    assert int8_matmul(a, a.T.copy(), 'numba')[0, 0] == INT8_MAX_K * 128 * 128
    with pytest.raises(ValueError, match='K <='):
        int8_matmul(np.zeros((1, INT8_MAX_K + 1), np.int8), np.zeros((INT8_MAX_K + 1, 1), np.int8))
    with pytest.raises(ValueError, match=r'b of shape \(3, N\)'):
        int8_matmul(np.zeros((2, 3), np.int8), np.zeros((2, 2), np.int8))
    with pytest.raises(ValueError, match='int8 a and b'):
        int8_matmul(np.zeros((2, 3), np.int16), np.zeros((3, 2), np.int8))
    with pytest.raises(ValueError, match="backend must be"):
        int8_matmul(np.zeros((2, 3), np.int8), np.zeros((3, 2), np.int8), 'fortran')


def test_fold_and_quantise_plan(trained, tmp_path):
    m, x, path = trained
    plan = InferencePlan.from_checkpoint(path)
    ref = plan.predict(x)
    folded = fold_batchnorm(plan)
    assert [op['op'] for op in folded.ops].count('affine') == 0
    np.testing.assert_allclose(folded.predict(x), ref, atol=1e-5)
    p16 = quantize_plan(plan, 'float16')
    np.testing.assert_allclose(p16.predict(x), ref, atol=5e-3 * np.abs(ref).max())
    p8 = quantize_plan(plan, 'int8', x)
    y8 = p8.predict(x)
    assert np.abs(y8 - ref).max() < 0.05 * np.abs(ref).max()
    np.testing.assert_array_equal(p8.predict(x, backend='numpy'), y8)
    np.testing.assert_array_equal(p8.predict(x[:2], backend='cuda'), y8[:2])
    f8 = p8.save(tmp_path / 'p8')
    np.testing.assert_array_equal(InferencePlan.load(f8).predict(x), y8)
    weights = lambda p: sum(v.nbytes for op in p.ops for k, v in op.items() if k == 'W')
    assert weights(p8) * 4 == weights(folded) and weights(p16) * 2 == weights(folded)
    with pytest.raises(ValueError, match='x_calib'): quantize_plan(plan, 'int8')
    with pytest.raises(ValueError, match="'minmax' or 'percentile'"): quantize_plan(plan, 'int8', x, method='kl')
