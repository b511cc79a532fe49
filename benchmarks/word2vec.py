"""Skip-gram with negative sampling on the CPU: our Numba kernel (`kernels.word2vec.sgns_train`, lock-free
parallel SGD as word2vec.c) against gensim 4.x's `Word2Vec(sg=1)` on the same corpus with the same threads.

    python benchmarks/word2vec.py [--reviews 25000] [--epochs 2] [--threads 2]      # or: make bench

The corpus is the IMDB training reviews (`data.load('imdb_reviews', 'train')`), tokenised once by
`text.tokenize` (words only, lowercase) for both. Both train with the same settings: window 5, 5 negatives,
100 dimensions, `min_count` 5, subsampling 1e-3 by word2vec.c's rule, alpha 0.025 falling linearly. One
difference stays: our kernel reads the reviews as one stream of words (windows run across the end of a review,
as word2vec.c does on a text file), gensim keeps each window inside its review. Our noise words come from
Walker's alias table (chapter 12's `alias_table`: 8 bytes per word, exact), and in one more row from word2vec.c's
table of 10^6 entries (`unigram_table`, 4 MB); gensim draws them by a binary search in the cumulative
distribution. Throughput is the words of the corpus in the vocabulary times the epochs, over the training time
alone (not the vocabulary building, not the tokenising). Both models are then scored by one function,
`text.evaluate_analogies`, on Mikolov's questions-words analogies (the 30,000 most frequent words), and by
`text.evaluate_similarity` on WordSim-353 and SimLex-999. Goal: >= 1.0x gensim's words per second, with analogy
accuracy within 2 points. Both are timed with the loss summed (`+loss`: an exp and a log per target in our
kernel, a table look-up in gensim) and without (gensim's default, the baseline of the ratios). gensim is a benchmark-only dependency (`pip install gensim`); without it the gensim
column is skipped.
"""
from __future__ import annotations
import argparse, os, statistics, time
from collections import Counter
# Before NumPy loads: OpenBLAS's idle threads must sleep at once, or they starve the Numba kernels (nbs/00_core).
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')
import numpy as np

SETTINGS = dict(window=5, negatives=5, dim=100, min_count=5, sample=1e-3, alpha=0.025)


def load_corpus(n_reviews=None):
    "Token lists of the first `n_reviews` IMDB training reviews (all: None) and their vocabulary (min_count 5)."
    from dl_from_scratch.data import load
    from dl_from_scratch.text import tokenize, Vocab
    reviews = load('imdb_reviews', 'train', progress=False)[0][:n_reviews]
    sentences = [tokenize(r, punctuation=False) for r in reviews]
    vocab = Vocab(Counter(w for s in sentences for w in s), min_freq=SETTINGS['min_count'])
    return sentences, vocab


def train_ours(sentences, vocab, epochs, threads, seed=1, compute_loss=False, noise='alias'):
    """Train our kernel on the reviews as one stream of in-vocabulary ids, noise words from the `noise` table
    ('alias' or word2vec.c's 'unigram'); (vectors (V, N), seconds, words trained)."""
    from dl_from_scratch.core import set_num_threads
    from dl_from_scratch.text import unigram_table, alias_table, keep_probability
    from dl_from_scratch.kernels.word2vec import sgns_train
    set_num_threads(threads)
    corpus = np.array([i for s in sentences for i in (vocab[w] for w in s) if i != 1], dtype=np.int64)
    V, N = len(vocab), SETTINGS['dim']
    table = alias_table(vocab.counts) if noise == 'alias' else unigram_table(vocab.counts, 10**6)
    keep = keep_probability(vocab.counts, t=SETTINGS['sample'], rule='word2vec.c')
    kw = dict(window=SETTINGS['window'], negatives=SETTINGS['negatives'], alpha=SETTINGS['alpha'], chunks=threads)
    sgns_train(corpus[:2000], np.zeros((V, N), np.float32), np.zeros((V, N), np.float32), table, keep, **kw)  # compile
    rng = np.random.default_rng(seed)
    W_in, W_out = ((rng.random((V, N)) - 0.5) / N).astype(np.float32), np.zeros((V, N), np.float32)
    t0 = time.perf_counter()
    sgns_train(corpus, W_in, W_out, table, keep, epochs=epochs, seed=seed, compute_loss=compute_loss, **kw)
    return W_in, time.perf_counter() - t0, len(corpus) * epochs


def train_gensim(sentences, epochs, threads, seed=1, compute_loss=False):
    """gensim's Word2Vec on the same token lists; (KeyedVectors, seconds, words trained), or None without gensim.
    `compute_loss=True` makes gensim sum the loss as our kernel always does (its default skips it)."""
    try:
        from gensim.models import Word2Vec
    except ImportError:
        return None
    s = SETTINGS
    model = Word2Vec(sg=1, hs=0, negative=s['negatives'], window=s['window'], vector_size=s['dim'],
                     min_count=s['min_count'], sample=s['sample'], alpha=s['alpha'], min_alpha=1e-4 * s['alpha'],
                     workers=threads, seed=seed, compute_loss=compute_loss)
    model.build_vocab(sentences)
    t0 = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=epochs)
    seconds = time.perf_counter() - t0
    words = sum(model.wv.get_vecattr(w, 'count') for w in model.wv.index_to_key) * epochs
    return model.wv, seconds, words


def run(n_reviews=None, epochs=1, threads=2):
    "Rows of (name, words/s, seconds, analogy scores) for our kernel and, when installed, gensim."
    from dl_from_scratch.text import evaluate_analogies, evaluate_similarity
    t0 = time.perf_counter()
    sentences, vocab = load_corpus(n_reviews)
    print(f"{len(sentences):,} reviews, {sum(map(len, sentences)):,} words, vocabulary {len(vocab) - 2:,} "
          f"(min_count {SETTINGS['min_count']}); tokenised in {time.perf_counter() - t0:.0f} s; {epochs} epoch(s), "
          f"{threads} thread(s)")
    rows = []
    for compute_loss, noise in ((True, 'alias'), (False, 'alias'), (False, 'unigram')):
        E, seconds, words = train_ours(sentences, vocab, epochs, threads, compute_loss=compute_loss, noise=noise)
        rows.append(('ours (Numba)' + (' +loss' if compute_loss else '') + (', 10^6 table' if noise == 'unigram' else ''),
                     E, vocab, seconds, words))
    for compute_loss in (True, False):     # gensim's default (no loss) last: the baseline of the ratios
        g = train_gensim(sentences, epochs, threads, compute_loss=compute_loss)
        if g is None:
            print("gensim not installed: its column is skipped (pip install gensim)")
            break
        import gensim
        kv, seconds, words = g
        rows.append((f'gensim {gensim.__version__}' + (' +loss' if compute_loss else ''), kv.vectors, kv.index_to_key,
                     seconds, words))
    out = []
    for name, E, words_of, seconds, words in rows:
        a = evaluate_analogies(E, words_of, restrict_vocab=30000)
        out.append(dict(name=name, seconds=seconds, words=words, rate=words / seconds, analogies=a,
                        wordsim=evaluate_similarity(E, words_of, 'wordsim353').spearman,
                        simlex=evaluate_similarity(E, words_of, 'simlex999').spearman))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--reviews', type=int, default=None, help='first N training reviews (default: all 25,000)')
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--threads', type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument('--rounds', type=int, default=0,
                   help='then time both (without the loss) alternately, this many rounds each')
    a = p.parse_args(argv)
    rows = run(a.reviews, a.epochs, a.threads)
    base = rows[-1]['rate'] if len(rows) > 1 else None
    print(f"\n{'':26s} {'words/s':>10s} {'seconds':>8s} {'vs gensim':>9s} {'semantic':>9s} {'syntactic':>9s} "
          f"{'total':>7s} {'asked':>6s} {'WS-353':>7s} {'SL-999':>7s}")
    for r in rows:
        an = r['analogies']
        ratio = f"{r['rate'] / base:.2f}x" if base else '-'
        print(f"{r['name']:26s} {r['rate']:10,.0f} {r['seconds']:8.1f} {ratio:>9s} {an['semantic'].accuracy:9.1%} "
              f"{an['syntactic'].accuracy:9.1%} {an['total'].accuracy:7.1%} {an['total'].asked:6,d} "
              f"{r['wordsim']:7.3f} {r['simlex']:7.3f}")
    if base:
        gap = 100 * (rows[1]['analogies']['total'].accuracy - rows[-1]['analogies']['total'].accuracy)
        print(f"goal >= 1.0x gensim's words/s (both without the loss): {rows[1]['rate'] / base:.2f}x; "
              f"analogy accuracy within 2 points: {gap:+.1f} points")
    if a.rounds and base: alternating(a.reviews, a.epochs, a.threads, a.rounds)


def alternating(n_reviews, epochs, threads, rounds):
    """Our kernel and gensim trained alternately, `rounds` times each, both without the loss: the words per second
    of each and the median of the per-round speed ratios. A load that comes and goes then weighs on both alike."""
    from _timing import interleaved
    sentences, vocab = load_corpus(n_reviews)
    def seconds_per_word(result): return result[1] / result[2]
    mine, theirs, ratios = interleaved(lambda: seconds_per_word(train_ours(sentences, vocab, epochs, threads)),
                                      lambda: seconds_per_word(train_gensim(sentences, epochs, threads)), rounds)
    speed = sorted(1 / r for r in ratios)
    print(f"\nalternating, {rounds} rounds: ours {', '.join(f'{1 / m:,.0f}' for m in mine)} words/s; "
          f"gensim {', '.join(f'{1 / t:,.0f}' for t in theirs)} words/s")
    print(f"ours / gensim words per second: median {statistics.median(speed):.2f}x (rounds from {speed[0]:.2f}x to {speed[-1]:.2f}x); "
          f"goal >= 1.0x")


if __name__ == '__main__':
    main()
