"Batches of variable length, the training loop over them, scores and bigram bags (dl_from_scratch.sentiment)."
import math
import numpy as np
import pytest
from collections import Counter
from dl_from_scratch.sentiment import length_batches, padded_steps, fit_sequences, predict_sequences, binary_scores, \
    with_bigrams, bag_ids
from dl_from_scratch.layers import Embedding, Dense, GlobalAveragePooling1D
from dl_from_scratch.rnn import LSTM, Bidirectional
from dl_from_scratch.model import Sequential
from dl_from_scratch.losses import BinaryCrossentropy
from dl_from_scratch.optim import Adam
from dl_from_scratch.text import Vocab


@pytest.mark.parametrize('window', [None, 1, 3, 100])
@pytest.mark.parametrize('shuffle', [True, False])
def test_length_batches_cover_every_index_once(window, shuffle):
    lengths = np.random.default_rng(1).integers(1, 50, 103)
    batches = length_batches(lengths, 8, rng=0, window=window, shuffle=shuffle)
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    assert all(1 <= len(b) <= 8 for b in batches)
    assert padded_steps(lengths, batches) >= lengths.sum()


def test_sorted_windows_pad_less_than_random_batches():
    lengths = np.random.default_rng(2).lognormal(5, 0.8, 2000).astype(int) + 1
    rand = padded_steps(lengths, length_batches(lengths, 64, rng=0, window=None))
    srt = padded_steps(lengths, length_batches(lengths, 64, rng=0, window=10))
    assert lengths.sum() <= srt < 0.7 * rand
    whole = length_batches(lengths, 64, window=1000, shuffle=False)       # one window, no shuffle: sorted order
    assert (np.diff(lengths[np.concatenate(whole)]) >= 0).all()


def test_length_batches_bad_input():
    with pytest.raises(ValueError, match='batch_size >= 1'): length_batches([1, 2], 0)
    with pytest.raises(ValueError, match='window >= 1'): length_batches([1, 2], 1, window=0)
    with pytest.raises(ValueError, match='lengths'): length_batches(np.ones((2, 2), int), 1)


def _masked_bilstm(V=12):
    m = Sequential([Embedding(V, 6, mask_zero=True, rng=0), Bidirectional(LSTM(5, rng=1)), Dense(1, rng=2)],
                   input_shape=(None,))
    return m.compile(BinaryCrossentropy(from_logits=True), Adam(0.01), ['accuracy'])


def test_masked_predictions_do_not_depend_on_batching():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 12, rng.integers(1, 20)) for _ in range(37)]
    m = _masked_bilstm()
    a = predict_sequences(m, seqs, batch_size=5)                      # sorted windows
    b = predict_sequences(m, seqs, batch_size=16, window=None)        # consecutive batches, more padding
    c = np.array([float(m.predict(s[None])[0, 0]) for s in seqs])     # one at a time, no padding
    np.testing.assert_allclose(a, c, atol=1e-5)
    np.testing.assert_allclose(b, c, atol=1e-5)
    pre = predict_sequences(m, seqs, batch_size=16, window=None, padding='pre')
    np.testing.assert_allclose(pre, c, atol=1e-5)


def test_fit_sequences_learns_and_reports():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(3, 12, rng.integers(2, 12)) for _ in range(160)]
    y = rng.integers(0, 2, 160)
    for s, lab in zip(seqs, y):
        if lab: s[rng.integers(len(s))] = 2                           # positive: holds id 2
    m = Sequential([Embedding(12, 8, mask_zero=True, rng=0), GlobalAveragePooling1D(), Dense(1, rng=1)], input_shape=(None,))
    m.compile(BinaryCrossentropy(from_logits=True), Adam(0.05), ['accuracy'])
    seen = []
    m.optimizer.lr = lambda e: seen.append(e) or 0.05                  # the schedule sees fractional epochs
    hist = fit_sequences(m, seqs, y, epochs=6, batch_size=16, rng=0, progress=False)
    assert len(hist) == 6 and hist[-1]['loss'] < 0.5 * hist[0]['loss']
    assert all(h['steps'] >= sum(len(s) for s in seqs) and h['seconds'] > 0 for h in hist)
    assert seen[0] == 0 and 0 < seen[1] < 1 and max(seen) < 6 and seen == sorted(seen)
    assert binary_scores(predict_sequences(m, seqs), y)['accuracy'] > 0.9


def test_fit_sequences_bad_input():
    m = _masked_bilstm()
    with pytest.raises(ValueError, match='at least one sequence'): fit_sequences(m, [], [])
    with pytest.raises(ValueError, match='expected 2 labels'): fit_sequences(m, [np.array([1]), np.array([2])], [1])
    with pytest.raises(ValueError, match='labels in'): fit_sequences(m, [np.array([1])], [2])


def test_binary_scores():
    s = binary_scores(np.array([-2.0, 0.3, 0.7, -0.1]), np.array([0, 1, 1, 1]))
    assert s['accuracy'] == 0.75 and s['accuracy_at_0.5'] == 0.5
    expected = np.mean([math.log1p(math.exp(-z)) if t else math.log1p(math.exp(z))
                        for z, t in zip([-2.0, 0.3, 0.7, -0.1], [0, 1, 1, 1])])
    assert abs(s['loss'] - expected) < 1e-9
    p = binary_scores(np.array([0.9, 0.2]), np.array([1, 1]), from_logits=False)
    assert p['accuracy'] == 0.5 and 'accuracy_at_0.5' not in p
    assert abs(p['loss'] - (-math.log(0.9) - math.log(0.2)) / 2) < 1e-9


def test_bigrams_and_bags():
    assert with_bigrams(['a', 'b', 'c']) == ['a', 'b', 'c', 'a b', 'b c']
    v = Vocab(Counter(with_bigrams(['not', 'bad', 'not', 'good'])))
    ids = bag_ids(v, with_bigrams(['not', 'good', 'not', 'good', 'zzz']))
    assert list(ids) == sorted(set(ids.tolist())) and all(i > 1 for i in ids)
    assert {v.itos[i] for i in ids} == {'not', 'good', 'not good'}    # 'good not', 'good zzz' unknown, dropped
    with pytest.raises(ValueError, match='at least one known token'): bag_ids(v, ['zzz'])
