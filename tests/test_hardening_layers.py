"""Bad and edge-case input to the convolution, normalisation and recurrent layers: empty batches, zero-length
sequences, BatchNorm's momentum and non-finite batches, and concurrent inference from several threads."""
import threading
import numpy as np
import pytest
from dl_from_scratch.core import precision
from dl_from_scratch.layers import BatchNorm, Layer
from dl_from_scratch.conv import Conv2D
from dl_from_scratch.rnn import SimpleRNN, LSTM, GRU


@pytest.mark.parametrize('momentum', [-0.1, 1.5, 2])
def test_batchnorm_refuses_momentum_outside_0_1(momentum):
    with pytest.raises(ValueError, match=rf'momentum in \[0, 1\], got {momentum}'):
        BatchNorm(momentum=momentum)
    BatchNorm(momentum=0.0); BatchNorm(momentum=1.0)


def test_batchnorm_refuses_an_empty_training_batch_and_keeps_its_statistics():
    bn = BatchNorm(); bn(np.random.default_rng(0).normal(size=(8, 3)), training=True)
    before = {k: v.copy() for k, v in bn.state.items()}
    for shape in [(0, 3), (0, 4, 4, 3)]:
        layer = bn if len(shape) == 2 else BatchNorm()
        with pytest.raises(ValueError, match=r'non-empty batch in training, got input shape \(0, '):
            layer(np.zeros(shape, np.float32), training=True)
    for k in before: np.testing.assert_array_equal(bn.state[k], before[k])
    assert bn(np.zeros((0, 3), np.float32)).shape == (0, 3)      # inference on nothing is an empty answer


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_batchnorm_raises_on_a_non_finite_batch_before_touching_its_running_statistics(bad):
    bn = BatchNorm(name='bn1'); x = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)
    bn(x, training=True)
    before = {k: v.copy() for k, v in bn.state.items()}
    x[3, 2] = bad
    with pytest.raises(FloatingPointError, match=r"BatchNorm 'bn1' got a batch of input shape \(16, 4\) whose statistics are not finite"):
        bn(x, training=True)
    for k in before: np.testing.assert_array_equal(bn.state[k], before[k])
    assert np.isfinite(bn(x[:3], training=False)).all()            # the statistics still serve


@pytest.mark.parametrize('algorithm', ['im2col', 'direct'])
def test_conv2d_empty_batch_gives_empty_output_and_zero_gradients(algorithm):
    c = Conv2D(3, 3, padding='same', rng=0, algorithm=algorithm)
    y = c(np.zeros((0, 6, 6, 1), np.float32))
    assert y.shape == (0, 6, 6, 3)
    dx = c.backward(np.zeros_like(y))
    assert dx.shape == (0, 6, 6, 1)
    assert all(np.all(g == 0) and g.shape == c.params[k].shape for k, g in c.grads.items())


@pytest.mark.parametrize('cls', [SimpleRNN, LSTM, GRU])
def test_recurrent_zero_length_sequence_is_a_clear_error(cls):
    with pytest.raises(ValueError, match=r'at least one time step.*got input shape \(2, 0, 3\)'):
        cls(4, rng=0)(np.zeros((2, 0, 3), np.float32))


@pytest.mark.parametrize('cls', [SimpleRNN, LSTM, GRU])
@pytest.mark.parametrize('return_sequences', [False, True])
def test_recurrent_empty_batch_gives_empty_output_and_zero_gradients(cls, return_sequences):
    layer = cls(4, return_sequences=return_sequences, rng=0)
    y = layer(np.zeros((0, 5, 3), np.float32))
    assert y.shape == ((0, 5, 4) if return_sequences else (0, 4))
    dx = layer.backward(np.zeros_like(y))
    assert dx.shape == (0, 5, 3)
    assert all(np.all(g == 0) and g.shape == layer.params[k].shape for k, g in layer.grads.items())


def _wrong_under_4_threads(f, xs, repeats=10):
    "How many of `repeats` calls f(xs[i]) per thread, 4 threads at once, differ from the call made alone."
    alone = [f(x) for x in xs]
    wrong = [0] * len(xs)
    def run(i):
        for _ in range(repeats): wrong[i] += not np.array_equal(f(xs[i]), alone[i])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(xs))]
    for t in threads: t.start()
    for t in threads: t.join()
    return wrong


@pytest.mark.parametrize('make, shape', [
    (lambda: Conv2D(16, 3, padding='same', rng=0, algorithm='im2col'), (8, 16, 16, 3)),
    (lambda: Conv2D(4, 3, padding='same', rng=0, algorithm='direct'), (8, 16, 16, 2)),
    (lambda: LSTM(64, return_sequences=True, rng=0), (64, 30, 64)),
    (lambda: GRU(64, rng=0), (64, 30, 64)),
    (lambda: SimpleRNN(64, rng=0), (64, 30, 64)),
])
def test_concurrent_inference_from_4_threads_matches_serial(make, shape):
    "The work arrays kept between batches are per thread (shared ones gave wrong outputs in most threads)."
    layer = make()
    xs = [np.random.default_rng(i).random(shape, dtype=np.float32) for i in range(4)]
    assert _wrong_under_4_threads(layer, xs) == [0, 0, 0, 0]


def test_concurrent_predict_of_a_cnn_matches_serial():
    from dl_from_scratch.model import Sequential
    from dl_from_scratch.layers import Dense, Flatten
    from dl_from_scratch.conv import MaxPool2D
    m = Sequential([Conv2D(8, 3, padding='same', activation='relu', rng=0), MaxPool2D(2),
                    Conv2D(16, 3, padding='same', activation='relu', rng=1), Flatten(), Dense(10, rng=2)],
                   input_shape=(16, 16, 3))
    xs = [np.random.default_rng(i).random((32, 16, 16, 3), dtype=np.float32) for i in range(4)]
    assert _wrong_under_4_threads(m.predict, xs) == [0, 0, 0, 0]
