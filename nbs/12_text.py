# %% [markdown]
# # Text, tokens and word vectors
#
# > Standardising and tokenising text, vocabularies with padding and truncation, byte-pair encoding trained from scratch, and the mathematics of word2vec: CBOW and skip-gram with the full softmax, hierarchical softmax on a Huffman tree, negative sampling, subsampling and phrase detection.
#
# ## Purpose
#
# A network takes numbers; text is a string. Between them stand three steps, and each one
# shapes what a model can learn:
#
# 1. **Standardise and split** the text into tokens (words and punctuation);
# 2. **number** the tokens through a *vocabulary*, with a padding id and an id for the
#    words it does not know, and cut or pad each sequence to one length for batching;
# 3. **embed** each id as a dense vector.
#
# Words are not the only units. A word vocabulary either grows without end or maps
# rare words to `<unk>`; *byte-pair encoding* (BPE) learns a vocabulary of frequent
# word pieces instead, so every text can be written with a fixed number of
# symbols. We train one with 8,000 symbols on the IMDB reviews, about the size of
# the `subwords8k` encoder that source 000 uses for its sentiment model.
#
# The vectors of step 3 can be learnt *before* any task, from raw text alone: word2vec
# trains them so that a word predicts its neighbours. This chapter derives word2vec's
# two models (CBOW and skip-gram) with the full softmax, then the two ways around the
# softmax's cost over the whole vocabulary: hierarchical softmax and negative sampling.
# The *Hands-On* book (source 002) works these out but prints a CBOW gradient with the
# wrong shape and leaves out the negative-sampling loss; both are put right here.
# Chapter 12a turns skip-gram with negative sampling into fast kernels and trains it
# on real text.

# %%
#| default_exp text

# %%
#| export
from __future__ import annotations
import heapq, math, re, unicodedata
from collections import Counter
from pathlib import Path
from typing import NamedTuple
import numpy as np

# %%
#| hide
import time
from fastcore.test import test_eq, test_fail, test_close
from dl_from_scratch.gradcheck import numerical_grad, rel_error
from dl_from_scratch.data import load

# %% [markdown]
# ## 1. Standardising and tokenising
#
# The IMDB reviews are raw web text: mixed case, HTML line breaks (`<br />`), accented
# names, punctuation glued to words. *Standardising* maps all the ways of writing one
# word to one string. Ours lowercases, turns `<br />` into a space, applies Unicode's
# NFKC normal form (so a ligature "ﬁ" and the two letters "fi" become one string), and
# folds runs of whitespace into one space.
#
# *Tokenising* then cuts the text into tokens with a regular expression. A word is a
# run of letters or digits, with inner apostrophes kept (`don't`, `it's`); every other
# non-space character is punctuation, which we either keep as a token of its own or
# drop (Keras's `TextVectorization` drops it by default; source 003 does the same with
# a regex over `string.punctuation`; source 002 keeps only `[A-Za-z0-9\s.]`).
# `[^\W_]` is "a word character except the underscore", so letters of every alphabet
# count, not just `a-z`.

# %%
#| export
WORD_RE = r"[^\W_]+(?:'[^\W_]+)*"
_TOKEN_RE = re.compile(WORD_RE + r"|[^\w\s]|_")
_WORD_ONLY_RE = re.compile(WORD_RE)
_BR_RE = re.compile(r'<br\s*/?>', re.IGNORECASE)
_SPACE_RE = re.compile(r'\s+')

def standardize(text: str, lower: bool = True) -> str:
    "Lowercase (if `lower`), HTML `<br />` -> space, Unicode NFKC, runs of whitespace -> one space, ends stripped."
    if not isinstance(text, str):
        raise ValueError(f"standardize expected a str, got {type(text).__name__}")
    text = unicodedata.normalize('NFKC', _BR_RE.sub(' ', text))
    if lower: text = text.lower()
    return _SPACE_RE.sub(' ', text).strip()

def tokenize(text: str, punctuation: bool = True, lower: bool = True) -> list[str]:
    """Standardise `text` and split it into tokens: words (letters/digits with inner apostrophes) and,
    if `punctuation`, each other non-space character as a token of its own. Raises ValueError for a
    text with no token."""
    tokens = (_TOKEN_RE if punctuation else _WORD_ONLY_RE).findall(standardize(text, lower))
    if not tokens:
        raise ValueError(f"tokenize expected a text with at least one {'token' if punctuation else 'word'}, "
                         f"got {text[:40]!r}")
    return tokens

# %%
review = "This movie's GREAT!<br /><br />Don't miss it... 10/10, the ﬁnest of 2006 (Café scene)."
print(standardize(review))
print(tokenize(review))
print(tokenize(review, punctuation=False))
test_eq(tokenize(review, punctuation=False),
        ["this", "movie's", "great", "don't", "miss", "it", "10", "10", "the", "finest", "of", "2006", "café", "scene"])
test_eq(tokenize("a_b 'quoted'"), ['a', '_', 'b', "'", 'quoted', "'"])      # edge apostrophes are quotes
test_fail(lambda: tokenize(''), contains='expected a text with at least one token')
test_fail(lambda: tokenize(' ?! ', punctuation=False), contains="at least one word, got ' ?! '")
test_fail(lambda: standardize(None), contains='expected a str, got NoneType')

# %% [markdown]
# ## 2. A vocabulary
#
# A vocabulary numbers the tokens. Two ids are reserved, as in Keras: `0` is `<pad>`,
# the filler that makes sequences of one length (and that a masking layer later
# ignores), and `1` is `<unk>`, which stands for every token not in the vocabulary.
# The other tokens follow by falling frequency (ties alphabetically, so the numbering
# is reproducible). Two cut-offs keep the vocabulary small: `min_freq` drops tokens
# seen fewer times than that, `max_size` keeps only the most frequent.
#
# Encoding a text that has no token, or none that the vocabulary knows, is almost
# always a mistake upstream (a wrong column, another language, a vocabulary built on
# other text), so it raises an error instead of returning nothing or a row of `<unk>`s.
# A vocabulary of fewer than two words cannot tell texts apart and is refused as well.

# %%
#| export
class Vocab:
    """Token <-> id map with `<pad>` = 0 and `<unk>` = 1, then tokens by falling count (ties alphabetically).

    `counts`: a mapping token -> count (e.g. a `Counter`). `min_freq`: drop tokens seen fewer times.
    `max_size`: at most this many ids in all (the two specials included)."""
    PAD, UNK = '<pad>', '<unk>'

    def __init__(self, counts, min_freq: int = 1, max_size: int | None = None):
        if max_size is not None and max_size < 4:
            raise ValueError(f"Vocab expected max_size >= 4 (<pad>, <unk> and at least 2 words), got {max_size}")
        words = sorted((w for w, c in counts.items() if c >= min_freq and w not in (self.PAD, self.UNK)),
                       key=lambda w: (-counts[w], w))
        if max_size is not None: words = words[:max_size - 2]
        if len(words) < 2:
            raise ValueError(f"Vocab expected at least 2 words with count >= min_freq={min_freq}, got {len(words)} "
                             f"({words})")
        self.itos = [self.PAD, self.UNK, *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.counts = np.array([0, 0, *(counts[w] for w in words)], dtype=np.int64)   # count of each id

    @classmethod
    def from_texts(cls, texts, punctuation: bool = True, **kw) -> 'Vocab':
        "Count the tokens of `texts` (an iterable of str) and build the vocabulary; `kw` as `Vocab`."
        counts = Counter()
        for t in texts: counts.update(tokenize(t, punctuation))
        return cls(counts, **kw)

    def __len__(self): return len(self.itos)
    def __contains__(self, token): return token in self.stoi
    def __getitem__(self, token: str) -> int: return self.stoi.get(token, 1)
    def __repr__(self): return f"Vocab({len(self)} ids: {self.itos[:6]}...)"

    def encode(self, tokens) -> np.ndarray:
        """Ids (int64, (T,)) of `tokens` (a list of str, or a str, which is tokenised first); unknown -> 1.
        Raises ValueError for no tokens or only unknown ones."""
        if isinstance(tokens, str): tokens = tokenize(tokens)
        if len(tokens) == 0: raise ValueError("Vocab.encode expected at least one token, got none")
        ids = np.fromiter((self.stoi.get(t, 1) for t in tokens), np.int64, len(tokens))
        if (ids == 1).all():
            raise ValueError(f"Vocab.encode expected at least one known token, got only unknown ones: {list(tokens)[:5]}")
        return ids

    def decode(self, ids) -> list[str]:
        "Tokens of `ids`, padding dropped."
        return [self.itos[i] for i in np.asarray(ids).tolist() if i != 0]

# %%
texts = ["The movie was great, great fun!", "The plot was thin.", "Great cast; the end was odd."]
v = Vocab.from_texts(texts, punctuation=False)
print(v, len(v))
test_eq(v.itos[:5], ['<pad>', '<unk>', 'great', 'the', 'was'])   # three words seen 3 times: alphabetical
test_eq(v.counts[:5].tolist(), [0, 0, 3, 3, 3])
test_eq(v.encode("The END was a surprise"), np.array([3, v['end'], 4, 1, 1]))
test_eq(v.decode([0, 0, 3, 2, 1]), ['the', 'great', '<unk>'])
test_eq(Vocab.from_texts(texts, punctuation=False, min_freq=2).itos, ['<pad>', '<unk>', 'great', 'the', 'was'])
test_eq(len(Vocab.from_texts(texts, punctuation=False, max_size=4)), 4)
test_fail(lambda: v.encode([]), contains='at least one token, got none')
test_fail(lambda: v.encode("a surprise twist"), contains="only unknown ones: ['a', 'surprise', 'twist']")
test_fail(lambda: Vocab(Counter(a=5, b=1), min_freq=2), contains="at least 2 words with count >= min_freq=2, got 1 (['a'])")
test_fail(lambda: Vocab(Counter(a=5, b=1), max_size=3), contains='max_size >= 4')

# %% [markdown]
# ### Padding and truncation
#
# A batch is a rectangle, so sequences are cut or padded to one length `maxlen`. Where
# to cut and where to pad is a choice, and Keras's `pad_sequences` defaults to the
# *front* for both (`'pre'`): a recurrent net reads left to right, so real tokens at the
# end lie closest to the output, and for a review the end often holds the verdict.
# `'post'` pads or cuts at the back.

# %%
#| export
def pad_sequences(sequences, maxlen: int | None = None, padding: str = 'pre', truncating: str = 'pre',
                  value: int = 0, dtype=np.int64) -> np.ndarray:
    """Pad/truncate a list of N integer sequences to an (N, maxlen) array, as Keras's `pad_sequences`.

    `maxlen`: default the longest sequence. `padding`/`truncating`: 'pre' (at the front) or 'post' (at the back)."""
    for name, where in (('padding', padding), ('truncating', truncating)):
        if where not in ('pre', 'post'):
            raise ValueError(f"pad_sequences expected {name} 'pre' or 'post', got {where!r}")
    sequences = [np.asarray(s) for s in sequences]
    if maxlen is None: maxlen = max((len(s) for s in sequences), default=0)
    if not isinstance(maxlen, (int, np.integer)) or maxlen < 1:
        raise ValueError(f"pad_sequences expected maxlen a positive integer, got {maxlen!r}")
    out = np.full((len(sequences), maxlen), value, dtype=dtype)
    for i, s in enumerate(sequences):
        if s.ndim != 1: raise ValueError(f"pad_sequences expected 1-D sequences, got shape {s.shape} at {i}")
        s = s[-maxlen:] if truncating == 'pre' else s[:maxlen]
        if padding == 'pre': out[i, maxlen - len(s):] = s
        else: out[i, :len(s)] = s
    return out

# %%
seqs = [[1, 2, 3], [4, 5, 6, 7, 8], [9]]
test_eq(pad_sequences(seqs, 4), np.array([[0, 1, 2, 3], [5, 6, 7, 8], [0, 0, 0, 9]]))
test_eq(pad_sequences(seqs, 4, padding='post', truncating='post'), np.array([[1, 2, 3, 0], [4, 5, 6, 7], [9, 0, 0, 0]]))
test_eq(pad_sequences(seqs).shape, (3, 5))
test_eq(pad_sequences([[], [1]], 2), np.array([[0, 0], [0, 1]]))
test_fail(lambda: pad_sequences(seqs, 4, padding='middle'), contains="padding 'pre' or 'post', got 'middle'")
test_fail(lambda: pad_sequences(seqs, 0), contains='maxlen a positive integer, got 0')

# %% [markdown]
# ## 3. Byte-pair encoding
#
# Byte-pair encoding (Sennrich et al., 2016, after Gage's 1994 compression scheme)
# starts from characters and *learns* larger symbols. Write every word of the
# training text as a sequence of characters; count every pair of adjacent symbols,
# weighted by how often its word occurs; merge the most frequent pair into one new
# symbol everywhere; repeat until the vocabulary has the size wanted. Frequent words
# end up as one symbol, rare words as a few frequent pieces (`un` `believ` `able`),
# and nothing is ever unknown except a character never seen in training.
#
# Words keep the space in front of them, written `▁` as in SentencePiece: `" great"`
# becomes `▁great`. So a symbol knows whether it starts a word, and decoding is just
# concatenation: `decode(encode(t))` gives back the standardised text, spaces and
# punctuation included.
#
# **Making training fast.** The plain algorithm recounts every pair of every word
# after each merge: with $M$ merges over a corpus of $W$ distinct words of length
# $\ell$, that is $O(M W \ell)$, billions of steps in Python for thousands of merges
# over the tens of thousands of distinct words of a real corpus. But a merge of $(a, b)$
# changes only the words that contain $ab$, and within them only the pairs next to it.
# So we keep
#
# * `pairs`: the count of every pair, updated by subtracting the old pairs of each
#   changed word and adding its new ones;
# * `where`: for every pair, the words it occurs in (an entry may be stale: a word that
#   no longer has the pair is skipped when visited);
# * a **heap** of (−count, pair), for the most frequent pair in $O(\log P)$. A count that
#   changes pushes a new entry; an entry whose count is no longer the pair's count is
#   stale and dropped when popped (*lazy deletion*), so the heap never needs searching.
#
# Each merge then costs time in proportion to the words it touches. Ties are broken
# by the pair's own order, the same in both versions, and the test below checks that
# the incremental trainer learns exactly the merges of the plain one.

# %%
#| export
_PRETOKEN_RE = re.compile(r" ?" + WORD_RE + r"| ?[^\w\s]+| ?_+")
SPACE = '\u2581'     # '▁', the mark of a word's leading space

def pretokenize(text: str) -> list[str]:
    "Standardise `text` and cut it into words and punctuation runs, each with its leading space as '▁'; joined, they give the standardised text."
    return [t.replace(' ', SPACE) for t in _PRETOKEN_RE.findall(standardize(text))]

def _merge_word(w: tuple, a: str, b: str) -> tuple:
    "`w` with every non-overlapping occurrence of the pair (a, b), left to right, replaced by a + b."
    out, i, n = [], 0, len(w)
    while i < n:
        if i < n - 1 and w[i] == a and w[i + 1] == b: out.append(a + b); i += 2
        else: out.append(w[i]); i += 1
    return tuple(out)

def bpe_train_naive(word_counts: dict, n_merges: int) -> list[tuple[str, str]]:
    "Reference BPE: recount all pairs before each merge. `word_counts`: word -> count. Returns the merges in order."
    words = {tuple(w): c for w, c in word_counts.items()}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]): pairs[p] += c
        if not pairs: break
        (a, b), c = min(pairs.items(), key=lambda pc: (-pc[1], pc[0]))
        if c < 2: break
        merges.append((a, b))
        words = {_merge_word(w, a, b): c for w, c in words.items()}
    return merges

def bpe_train(word_counts: dict, n_merges: int) -> list[tuple[str, str]]:
    """BPE with incremental pair counts and a lazy heap: the merges `bpe_train_naive` learns, in time
    proportional to the words each merge touches. `word_counts`: word -> count."""
    words = [tuple(w) for w in word_counts]
    freq = list(word_counts.values())
    pairs, where = Counter(), {}
    for i, (w, f) in enumerate(zip(words, freq)):
        for p in zip(w, w[1:]):
            pairs[p] += f; where.setdefault(p, set()).add(i)
    heap = [(-c, p) for p, c in pairs.items()]
    heapq.heapify(heap)
    merges = []
    while heap and len(merges) < n_merges:
        negc, p = heapq.heappop(heap)
        if pairs.get(p, 0) != -negc: continue          # stale entry
        if -negc < 2: break
        merges.append(p)
        a, b = p
        changed = set()
        for i in where.pop(p):
            w = words[i]
            w2 = _merge_word(w, a, b)
            if len(w2) == len(w): continue             # stale: the word lost this pair to an earlier merge
            f = freq[i]
            for q in zip(w, w[1:]): pairs[q] -= f; changed.add(q)
            for q in zip(w2, w2[1:]):
                pairs[q] += f; changed.add(q); where.setdefault(q, set()).add(i)
            words[i] = w2
        for q in changed:
            c = pairs[q]
            if c > 0: heapq.heappush(heap, (-c, q))
            else: del pairs[q]
    return merges

# %%
toy = Counter({'▁low': 5, '▁lower': 2, '▁newest': 6, '▁widest': 3})      # Sennrich et al.'s example
print(bpe_train(toy, 10))
test_eq(bpe_train(toy, 10), bpe_train_naive(toy, 10))
test_eq(bpe_train(toy, 4)[:3], [('e', 's'), ('es', 't'), ('l', 'o')])     # Sennrich et al.'s first three merges
test_eq(_merge_word(tuple('aaaa'), 'a', 'a'), ('aa', 'aa'))
test_eq(''.join(pretokenize(review)).replace(SPACE, ' '), standardize(review))
rng = np.random.default_rng(0)
for trial in range(30):       # random corpora over a small alphabet: many ties, repeats like 'aaa'
    corpus = Counter({''.join(rng.choice(list('ab▁c'), rng.integers(1, 8))): int(rng.integers(1, 6)) for _ in range(25)})
    test_eq(bpe_train(corpus, 40), bpe_train_naive(corpus, 40))

# %% [markdown]
# The tokenizer applies the learnt merges to a new word in the order they were learnt:
# repeatedly merge the adjacent pair with the lowest merge rank. A pair made of a new
# symbol always ranks after the merge that created it, so this gives each training
# word exactly the segmentation training ended with. Words repeat, so each word's
# segmentation is cached. The ids are `<pad>` = 0 and `<unk>` = 1 as in `Vocab`, then
# the characters of the training text, then one per merge.

# %%
#| export
class BPE:
    """A byte-pair-encoding tokenizer: `merges` (pairs of symbols, in the order learnt) over an `alphabet` of
    characters. Ids: `<pad>` 0, `<unk>` 1 (a character outside the alphabet), the alphabet, then one per merge."""
    def __init__(self, merges, alphabet):
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: r for r, m in enumerate(self.merges)}
        self.itos = ['<pad>', '<unk>', *sorted(alphabet), *(a + b for a, b in self.merges)]
        self.stoi = {}
        for i, s in enumerate(self.itos): self.stoi.setdefault(s, i)    # two merges may spell one string
        self._cache = {}

    @classmethod
    def train(cls, texts, vocab_size: int = 8000, progress: bool = False) -> 'BPE':
        "Learn `vocab_size - 2 - (number of characters)` merges from `texts` (an iterable of str)."
        counts = Counter()
        for t in texts: counts.update(pretokenize(t))
        alphabet = {ch for w in counts for ch in w}
        n_merges = vocab_size - 2 - len(alphabet)
        if n_merges < 0:
            raise ValueError(f"BPE.train expected vocab_size >= {len(alphabet) + 2} (<pad>, <unk> and the "
                             f"{len(alphabet)} characters of the text), got {vocab_size}")
        return cls(bpe_train(counts, n_merges), alphabet)

    def __len__(self): return len(self.itos)

    def _segment(self, word: str) -> tuple:
        seg = self._cache.get(word)
        if seg is None:
            seg = tuple(word)
            while len(seg) > 1:
                p = min(zip(seg, seg[1:]), key=lambda q: self.ranks.get(q, math.inf))
                if p not in self.ranks: break
                seg = _merge_word(seg, *p)
            self._cache[word] = seg
        return seg

    def tokens(self, text: str) -> list[str]:
        "The subword symbols of `text` (standardised first); raises ValueError for an empty text."
        words = pretokenize(text)
        if not words: raise ValueError(f"BPE expected a non-empty text, got {text[:40]!r}")
        return [s for w in words for s in self._segment(w)]

    def encode(self, text: str) -> np.ndarray:
        "Ids (int64, (T,)) of `text`; raises ValueError for an empty text or one of unknown characters only."
        ids = np.array([self.stoi.get(s, 1) for s in self.tokens(text)], dtype=np.int64)
        if (ids == 1).all(): raise ValueError(f"BPE expected a text with a known character, got {text[:40]!r}")
        return ids

    def decode(self, ids) -> str:
        "The text of `ids` (padding dropped, '▁' back to spaces)."
        return ''.join(self.itos[i] for i in np.asarray(ids).tolist() if i != 0).replace(SPACE, ' ').strip()

# %%
docs = ["the lowest price, the newest model", "a wider and lower road", "newer, wider, lowest!"] * 3
bpe = BPE.train(docs, vocab_size=40)
print(len(bpe), bpe.tokens("the newest road is lower"))
test_eq(len(bpe), 40)
for d in docs + ["Lower the WIDEST road!"]:
    test_eq(bpe.decode(bpe.encode(d)), standardize(d))                 # lossless on standardised text
test_eq(bpe.encode('the ☃ road')[2], 1)                                 # an unseen character is <unk>
test_fail(lambda: bpe.encode('  '), contains='non-empty text')
test_fail(lambda: bpe.encode('☃☃'), contains='with a known character')
test_fail(lambda: BPE.train(docs, vocab_size=10), contains='expected vocab_size >= ')

# %% [markdown]
# ### BPE on the IMDB reviews
#
# Trained on the 25,000 training reviews with 8,000 ids in all. The frequent words
# become single symbols; rarer ones split into pieces that carry meaning.

# %%
#| imdb_reviews
imdb_train, imdb_labels = load('imdb_reviews', 'train', progress=False)
t0 = time.perf_counter()
bpe = BPE.train(imdb_train, vocab_size=8000)
t_bpe = time.perf_counter() - t0
print(f"BPE with {len(bpe):,} ids ({len(bpe.merges):,} merges over {len(bpe.itos) - 2 - len(bpe.merges)} characters) "
      f"trained in {t_bpe:.1f} s")
print('first merges:', [a + b for a, b in bpe.merges[:12]])
for s in ["This movie was unbelievably overrated.", "Cinematographically stunning, but the dialogue is cringeworthy."]:
    print(bpe.tokens(s))
n_words = sum(len(pretokenize(t)) for t in imdb_train[:2000]); n_bpe = sum(len(bpe.encode(t)) for t in imdb_train[:2000])
print(f"first 2,000 reviews: {n_words / 2000:.1f} words and punctuation runs, {n_bpe / 2000:.1f} BPE ids per review on average")
test_eq(len(bpe), 8000)
test_eq(bpe.decode(bpe.encode(imdb_train[0])), standardize(imdb_train[0]))

# %% [markdown]
# ## 4. word2vec: the idea and the data
#
# "You shall know a word by the company it keeps" (Firth, 1957). word2vec (Mikolov et
# al., 2013) turns that into a training task. Slide a window over the text; in
# "the sun rises in the east" with window 2 around *rises*, the context is *the, sun,
# in, the*. Two models learn from the windows:
#
# * **CBOW** (continuous bag of words) predicts the centre word from the average of its
#   context words' vectors;
# * **skip-gram** predicts each context word from the centre word's vector.
#
# Each word $w$ has two vectors: an *input* vector, row $w$ of $W_1\in\mathbb R^{V\times N}$,
# and an *output* vector, column $w$ of $W_2\in\mathbb R^{N\times V}$ ($V$ words, $N$
# dimensions). The input vectors are the embeddings we keep.
#
# The windows below are those of every position; a window reaching past either end of
# the text is cut there. A window must be at least 1, and the text longer than it.

# %%
#| export
def _check_window(ids, window, who):
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in 'iu':
        raise ValueError(f"{who} expected a 1-D array of integer ids, got {ids.dtype} of shape {ids.shape}")
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"{who} expected a window of at least 1 (words on each side), got {window!r}")
    if len(ids) <= window:
        raise ValueError(f"{who} expected a corpus longer than the window ({window}), got {len(ids)} words")
    return ids

def skipgram_pairs(ids, window: int):
    "All (centre, context) pairs of the 1-D id array `ids` within `window` words on each side: two int64 arrays (P,)."
    ids = _check_window(ids, window, 'skipgram_pairs')
    pos = np.arange(len(ids))
    centre, context = [], []
    for d in range(1, window + 1):
        centre += [pos[:-d], pos[d:]]; context += [pos[d:], pos[:-d]]
    c, o = np.concatenate(centre), np.concatenate(context)
    order = np.lexsort((o, c))
    return ids[c[order]], ids[o[order]]

def cbow_windows(ids, window: int):
    "CBOW examples of `ids`: for each position t, the context ids (list of arrays, cut at the ends) and the target ids[t]."
    ids = _check_window(ids, window, 'cbow_windows')
    return [np.r_[ids[max(0, t - window):t], ids[t + 1:t + 1 + window]] for t in range(len(ids))], ids.copy()

# %%
words = "the sun rises in the east".split()
sv = {w: i for i, w in enumerate(dict.fromkeys(words))}          # the, sun, rises, in, east
ids = np.array([sv[w] for w in words])
ctx, tgt = cbow_windows(ids, 2)
inv = list(sv)
print('context of "rises":', [inv[i] for i in ctx[2]])
test_eq([inv[i] for i in ctx[2]], ['the', 'sun', 'in', 'the'])
c, o = skipgram_pairs(ids, 2)
test_eq(len(c), 2 * (5 + 4))                                        # pairs at distance 1 and 2, both ways
test_eq(sorted(zip(c.tolist(), o.tolist())), sorted((ids[i], ids[j]) for i in range(6) for j in range(6) if 0 < abs(i - j) <= 2))
test_fail(lambda: skipgram_pairs(ids, -1), contains='window of at least 1 (words on each side), got -1')
test_fail(lambda: cbow_windows(ids[:2], 2), contains='corpus longer than the window (2), got 2 words')
test_fail(lambda: skipgram_pairs(np.array([0.5, 1.0]), 1), contains='1-D array of integer ids')

# %% [markdown]
# ## 5. The full softmax, and its gradient
#
# Take the input words $I$ (CBOW: the $C$ context words; skip-gram: the one centre
# word) and the words to predict $O$ (CBOW: the centre word; skip-gram: the $C$ context
# words). The hidden layer is linear, the average of the input vectors, and every word
# gets a score:
#
# $$h = \frac1{|I|}\sum_{i\in I} W_1[i] \in\mathbb R^N,\qquad u = W_2^\top h\in\mathbb R^V,\qquad
# y = \operatorname{softmax}(u),\qquad L = -\sum_{o\in O}\log y_o = -\sum_{o\in O}u_o + |O|\log\sum_{j=1}^V e^{u_j}.$$
#
# (Source 002 prints one step of this with "$+\log$" for "$-\log$" inside the
# bracket, a sign slip, and then reaches the right result.) With $t$ the count vector
# of $O$ ($t_j$ = how often $j$ is in $O$), the derivative of the log-sum-exp is the
# softmax, so
#
# $$e \equiv \frac{\partial L}{\partial u} = |O|\,y - t \in\mathbb R^V,\qquad
# \frac{\partial L}{\partial W_2} = h\,e^\top \in\mathbb R^{N\times V},\qquad
# \frac{\partial L}{\partial h} = W_2\,e \in\mathbb R^N,\qquad
# \frac{\partial L}{\partial W_1[i]} = \frac1{|I|}\,W_2\,e \ \text{ for each } i\in I.$$
#
# For skip-gram, $e$ is source 002's $\mathrm{EI}=\sum_c e_c$: each context slot has the
# same scores $u$, so their errors add. Only the rows of $W_1$ that were used get a
# gradient; as a dense matrix, $\partial L/\partial W_1 = x\,(W_2 e)^\top$ with $x$ the
# (averaged) one-hot input, of shape $V\times N$ like $W_1$. One function serves both
# models: they differ only in which words are $I$ and which are $O$.

# %%
#| export
def softmax_w2v_loss_grad(W1, W2, inputs, outputs):
    """word2vec with the full softmax. W1 (V, N) input vectors, W2 (N, V) output vectors; `inputs`: the ids
    averaged into h (CBOW: the context; skip-gram: the centre); `outputs`: the ids predicted (CBOW: the centre;
    skip-gram: the context). Returns (loss, dW1 (V, N), dW2 (N, V))."""
    inputs, outputs = np.atleast_1d(inputs), np.atleast_1d(outputs)
    h = W1[inputs].mean(0)
    u = W2.T @ h
    m = u.max()
    log_z = m + np.log(np.exp(u - m).sum())
    loss = len(outputs) * log_z - u[outputs].sum()
    e = len(outputs) * np.exp(u - log_z)
    np.subtract.at(e, outputs, 1.0)                    # e = |O| y - t
    dW2 = np.outer(h, e)
    dW1 = np.zeros_like(W1)
    np.add.at(dW1, inputs, (W2 @ e) / len(inputs))
    return loss, dW1, dW2

# %%
rng = np.random.default_rng(0)
V, N = 7, 3
W1, W2 = rng.normal(size=(V, N)), rng.normal(size=(N, V))
for name, I, O in [('CBOW, one context word', [2], [4]), ('CBOW, 4 context words', [0, 1, 3, 0], [2]),
                   ('skip-gram, 4 context words', [2], [0, 1, 3, 0])]:
    loss, dW1, dW2 = softmax_w2v_loss_grad(W1, W2, I, O)
    e1 = rel_error(dW1, numerical_grad(lambda W: softmax_w2v_loss_grad(W, W2, I, O)[0], W1.copy()))
    e2 = rel_error(dW2, numerical_grad(lambda W: softmax_w2v_loss_grad(W1, W, I, O)[0], W2.copy()))
    print(f"{name:27s} loss {loss:.4f}   gradient check: dW1 {e1:.1e}, dW2 {e2:.1e}")
    assert e1 < 1e-6 and e2 < 1e-6

# %% [markdown]
# **The shape of $\partial L/\partial W_1$ in source 002.** Its `Single_context_CBOW`
# computes `dW1 = np.outer(x, np.dot(W2.T, e))`, with `W2` of shape $(N, V)$ and `e` of
# shape $(V,)$. `W2.T` is $(V, N)$, which cannot multiply a vector of length $V$ unless
# $N = V$: NumPy refuses. The derivation above says $W_2 e$, of shape $(N,)$, and then
# `np.outer(x, W2 @ e)` has $W_1$'s shape $(V, N)$:

# %%
x = np.eye(V)[2]                                    # the one-hot input word
h = W1.T @ x; u = W2.T @ h; y = np.exp(u) / np.exp(u).sum()
e = y - np.eye(V)[4]
try:
    np.outer(x, np.dot(W2.T, e))                    # source 002's line
except ValueError as err:
    print('np.dot(W2.T, e):', err)
dW1 = np.outer(x, W2 @ e)
print('np.outer(x, W2 @ e):', dW1.shape, '= W1.shape', W1.shape)
test_close(dW1, softmax_w2v_loss_grad(W1, W2, [2], [4])[1], eps=1e-12)
test_fail(lambda: np.dot(W2.T, e))

# %% [markdown]
# The full softmax costs $O(V)$ per example for $u$, for $y$ and for $\partial L/\partial W_2$:
# with $V = 100{,}000$ words, a hundred thousand dot products to learn from one pair of
# words. The two remedies below replace the $V$-way softmax by a few *binary* decisions,
# each a logistic regression on $h$. Write $\sigma$ for the logistic function and take
# output vectors $U_1,\dots,U_K$ (rows) with labels $\ell_k\in\{0, 1\}$. Then
#
# $$L = -\sum_{k=1}^K \log\sigma\big(s_k\,U_k\cdot h\big),\quad s_k = 2\ell_k - 1,\qquad
# \frac{\partial L}{\partial (U_k\cdot h)} = \sigma(U_k\cdot h) - \ell_k \equiv g_k,\qquad
# \frac{\partial L}{\partial h} = \sum_k g_k U_k,\qquad \frac{\partial L}{\partial U_k} = g_k\,h,$$
#
# using $\frac{d}{dx}\log\sigma(x) = 1-\sigma(x)$ and $\sigma(-x) = 1 - \sigma(x)$. Both remedies
# are this one loss; they differ in which vectors and labels they feed it. We compute
# $-\log\sigma(x) = \log(1+e^{-x})$ as `np.logaddexp(0, -x)`, which never overflows.

# %%
#| export
def sigmoid(x):
    "Logistic function, stable for any x."
    return np.exp(-np.logaddexp(0, -x))

def binary_w2v_loss_grad(h, U, labels):
    """Sum of binary logistic losses of the scores U @ h: h (N,), U (K, N) output vectors, labels (K,) in {0, 1}.
    Returns (loss, dh (N,), dU (K, N)). Hierarchical softmax (labels = Huffman code) and negative sampling
    (labels = 1, 0, ..., 0) are both this loss."""
    x = U @ h
    labels = np.asarray(labels, dtype=x.dtype)
    loss = np.logaddexp(0, -(2 * labels - 1) * x).sum()
    g = sigmoid(x) - labels
    return loss, g @ U, np.outer(g, h)

# %%
rng = np.random.default_rng(1)
h, U, lab = rng.normal(size=4), rng.normal(size=(5, 4)), np.array([1, 0, 0, 1, 0])
loss, dh, dU = binary_w2v_loss_grad(h, U, lab)
test_close(loss, -np.log(sigmoid(U[[0, 3]] @ h)).sum() - np.log(1 - sigmoid(U[[1, 2, 4]] @ h)).sum(), eps=1e-12)
eh = rel_error(dh, numerical_grad(lambda z: binary_w2v_loss_grad(z, U, lab)[0], h.copy()))
eU = rel_error(dU, numerical_grad(lambda z: binary_w2v_loss_grad(h, z, lab)[0], U.copy()))
print(f"binary word2vec loss: gradient check dh {eh:.1e}, dU {eU:.1e}")
assert eh < 1e-6 and eU < 1e-6
test_close(sigmoid(np.array([-800., 0., 800.])), np.array([0., 0.5, 1.]), eps=1e-300)

# %% [markdown]
# ## 6. Hierarchical softmax
#
# Put the $V$ words at the leaves of a binary tree, with an output vector $v'_n$ at each of
# its $V-1$ inner nodes. At node $n$ go right with probability $\sigma(v'_n\cdot h)$ and
# left with $1-\sigma(v'_n\cdot h)$; a word's probability is the product along its path from
# the root. Each inner node splits its probability between its two subtrees, so the
# leaves sum to 1 for any $h$: a proper distribution over $V$ words from $\approx\log_2 V$
# binary decisions instead of $V$ scores.
#
# Source 002's worked example: if the path to *flew* goes left at the root $n_0$ with
# probability 0.6 and right at $n_1$ with probability 0.8, then
# $p(\textit{flew}\mid c) = 0.6\cdot 0.8 = 0.48$. In the loss above, a left turn is label 0 and
# a right turn label 1, so the labels are the word's *code* (its path written in bits).
#
# word2vec builds the tree by **Huffman coding** on the word counts: repeatedly join the two
# least frequent nodes. Frequent words get short codes, so the expected path length, and
# the cost per example, is the minimum possible for a binary tree, at most one bit more
# than the entropy of the word distribution.

# %%
#| export
def huffman_tree(counts):
    """Huffman coding of word `counts` (V,), V >= 2: for each word, `points` (the inner nodes 0..V-2 on its path,
    root first) and `codes` (0 = left, 1 = right at each). The less frequent child goes left; ties by node id."""
    counts = np.asarray(counts)
    V = len(counts)
    if V < 2: raise ValueError(f"huffman_tree expected at least 2 words, got {V}")
    heap = [(int(c), i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    parent, bit = np.zeros(2 * V - 1, np.int64), np.zeros(2 * V - 1, np.int8)
    for node in range(V, 2 * V - 1):
        (c1, a), (c2, b) = heapq.heappop(heap), heapq.heappop(heap)
        parent[a], parent[b], bit[a], bit[b] = node, node, 0, 1
        heapq.heappush(heap, (c1 + c2, node))
    root, points, codes = 2 * V - 2, [], []
    for w in range(V):
        p, c, n = [], [], w
        while n != root:
            p.append(parent[n] - V); c.append(bit[n]); n = parent[n]
        points.append(np.array(p[::-1], np.int64)); codes.append(np.array(c[::-1], np.int8))
    return points, codes

def hs_probability(h, W_nodes, point, code) -> float:
    "p(word | h) under hierarchical softmax: W_nodes (V-1, N) inner-node vectors; the word's `point`, `code`."
    return float(np.exp(-binary_w2v_loss_grad(h, W_nodes[point], code)[0]))

# %% [markdown]
# The worked example: a tree whose first two nodes give $\sigma(v'_{n_0}\cdot h) = 0.4$ and
# $\sigma(v'_{n_1}\cdot h) = 0.8$ (with $h = 1$, take $v'_n = \log\frac{p}{1-p}$):

# %%
logit = lambda p: np.log(p / (1 - p))
W_nodes = np.array([[logit(0.4)], [logit(0.8)]])
p_flew = hs_probability(np.ones(1), W_nodes, point=np.array([0, 1]), code=np.array([0, 1]))
print(f"p(flew | c) = (1 - 0.4) * 0.8 = {p_flew:.2f}")
test_close(p_flew, 0.48, eps=1e-12)

counts = np.array([50, 3, 20, 7, 1, 12, 5, 2])
points, codes = huffman_tree(counts)
for w in (0, 4): print(f"word {w} (count {counts[w]}): code {codes[w].tolist()}, inner nodes {points[w].tolist()}")
rng = np.random.default_rng(2)
Wn, hv = rng.normal(size=(len(counts) - 1, 5)), rng.normal(size=5)
probs = np.array([hs_probability(hv, Wn, p, c) for p, c in zip(points, codes)])
print(f"sum over the {len(counts)} leaves: {probs.sum():.12f}")
test_close(probs.sum(), 1.0, eps=1e-12)
L = np.array([len(c) for c in codes]); f = counts / counts.sum()
print(f"expected code length {f @ L:.3f} bits; entropy {-(f * np.log2(f)).sum():.3f} bits")
assert -(f * np.log2(f)).sum() <= f @ L < -(f * np.log2(f)).sum() + 1
test_eq(len(codes[0]), 1)                                   # the most frequent word: one decision
test_fail(lambda: huffman_tree([5]), contains='at least 2 words, got 1')

# %% [markdown]
# ## 7. Negative sampling
#
# Negative sampling (Mikolov et al., 2013b) drops the normalised distribution
# altogether. For a true pair (input $h = v_c$, output word $o$) it draws $K$ "noise" words
# $w_1,\dots,w_K$ and trains a logistic regression to tell the true word from the noise:
#
# $$L = -\log\sigma(u_o\cdot v_c) - \sum_{k=1}^K\log\sigma(-u_{w_k}\cdot v_c),$$
#
# the loss source 002 leaves out (it gives only the noise distribution). It is the binary
# loss above with $U = [u_o; u_{w_1};\dots;u_{w_K}]$ and labels $(1, 0, \dots, 0)$, so
#
# $$\frac{\partial L}{\partial v_c} = (\sigma(u_o\cdot v_c) - 1)\,u_o + \sum_k\sigma(u_{w_k}\cdot v_c)\,u_{w_k},\qquad
# \frac{\partial L}{\partial u_o} = (\sigma(u_o\cdot v_c) - 1)\,v_c,\qquad
# \frac{\partial L}{\partial u_{w_k}} = \sigma(u_{w_k}\cdot v_c)\,v_c,$$
#
# $K+1$ dot products instead of $V$. The noise words are drawn from the unigram
# distribution raised to the power ¾,
# $P_n(w) = f(w)^{3/4}/\sum_j f(w_j)^{3/4}$, which draws rare words more often than their
# frequency. word2vec.c draws from a *table*: $10^8$ slots, word $w$ filling a share
# $P_n(w)$ of them, so a draw is one random index. (Source 003 gives the same distribution
# and $K$ = 5–20 for small data sets, 2–5 for large ones.)

# %%
#| export
def noise_distribution(counts, power: float = 0.75) -> np.ndarray:
    "P_n(w) = counts^power / sum(counts^power) (float64, (V,))."
    p = np.asarray(counts, dtype=np.float64) ** power
    if p.sum() <= 0: raise ValueError("noise_distribution expected at least one positive count")
    return p / p.sum()

def unigram_table(counts, size: int = 10**6, power: float = 0.75) -> np.ndarray:
    "word2vec.c's sampling table (int32, (size,)): word w fills a share P_n(w) of the slots, in order of id."
    cdf = np.cumsum(noise_distribution(counts, power))
    return np.minimum(np.searchsorted(cdf, (np.arange(size) + 0.5) / size, side='right'), len(cdf) - 1).astype(np.int32)

# %%
counts = np.array([0, 0, 900, 90, 9, 1])                  # <pad>, <unk> never appear, so are never drawn
p = noise_distribution(counts)
table = unigram_table(counts, 10**5)
share = np.bincount(table, minlength=len(counts)) / len(table)
print('unigram share', np.round(counts / counts.sum(), 4), '\nP_n (power 3/4)', np.round(p, 4), '\ntable share', share)
test_close(share, p, eps=2e-5)
test_eq(share[:2], [0, 0])

# %% [markdown]
# **Drawing without the big table.** A table of $10^6$ slots (4 MB as int32) does not
# fit a core's cache, so each draw is likely a trip to main memory, and a training run
# makes hundreds of millions of draws. It also rounds: a word whose share $P_n(w)$ is
# below one slot's $10^{-6}$ gets one slot or none. Walker's *alias method* (Walker,
# 1977; the construction below is Vose's, 1991) draws exactly from $P_n$ with a table of
# $V$ rows. Stand the $V$ probabilities side by side as columns of heights $V P_n(w)$,
# whose mean is 1. Repeatedly take a column shorter than 1 (word $s$) and one taller
# (word $\ell$): cut from $\ell$ the piece $1 - V P_n(s)$ that fills $s$'s column up to 1,
# and write down the *threshold* $V P_n(s)$ and the *alias* $\ell$ in row $s$. The tall
# column is now shorter by that piece, and becomes a short one when it falls below 1.
# Each step fills one column, so after at most $V$ steps every column has height 1 and
# holds at most two words. A draw picks a column $i$ uniformly and a coin $u$ uniform
# in $[0, 1)$, and returns $i$ if $u$ is below row $i$'s threshold and its alias
# otherwise. Word $w$ is drawn with probability
#
# $$\frac{1}{V}\Big(\text{threshold}_w + \sum_{i:\ \text{alias}_i = w}(1 - \text{threshold}_i)\Big) = P_n(w),$$
#
# since the pieces of $w$'s height ended up in its own row and in the rows it filled.
# With 32-bit random numbers $r$ both choices come from one multiplication: $rV$ is
# below $2^{32}V$, its high part $\lfloor rV/2^{32}\rfloor$ is the column and its low
# 32 bits the coin, so thresholds are stored as integers scaled by $2^{32}$. For a
# vocabulary of 30,000 words the table takes 240 KB, small enough to stay in a core's
# cache.

# %%
#| export
def alias_table(counts, power: float = 0.75) -> np.ndarray:
    """Walker's alias table for P_n (uint32, (V, 2)), built by Vose's method: row i holds a threshold (scaled by
    2^32) and an alias. From a uniform 32-bit r, with column i = (r V) >> 32 and coin u = (r V) mod 2^32, a draw is
    i if u < table[i, 0], else table[i, 1]; word w then comes with probability exactly P_n(w) (to 2^-32)."""
    p = noise_distribution(counts, power)
    V = len(p)
    height = p * V                                           # the columns' heights: mean 1
    table = np.zeros((V, 2), np.uint32)
    table[:, 1] = np.arange(V)                               # a full column draws its own word either way
    short = [i for i in range(V) if height[i] < 1]
    tall = [i for i in range(V) if height[i] >= 1]
    while short and tall:
        s, l = short.pop(), tall[-1]
        table[s] = min(int(height[s] * 2**32), 2**32 - 1), l  # s keeps its height, l fills the rest of its column
        height[l] -= 1 - height[s]
        if height[l] < 1: short.append(tall.pop())
    return table      # the columns left in either list are full up to rounding: they keep their own word

# %%
def alias_probability(table):
    "Each word's probability under an alias table: its own threshold plus the pieces of the columns it fills."
    kept = table[:, 0] / 2**32
    return (kept + np.bincount(table[:, 1], weights=1 - kept, minlength=len(table))) / len(table)

counts = np.array([0, 0, 900, 90, 9, 1])
toy_alias = alias_table(counts)
test_close(alias_probability(toy_alias), noise_distribution(counts), eps=1e-9)
test_eq(alias_probability(toy_alias)[:2], [0, 0])            # <pad> and <unk>: never drawn
zipf = np.r_[0, 0, (10**6 / np.arange(1, 30_001)).astype(int)]   # a Zipf vocabulary of 30,000 words
test_close(alias_probability(alias_table(zipf)), noise_distribution(zipf), eps=1e-9)
rand32 = np.random.default_rng(0).integers(1, 2**32, 10**6, dtype=np.uint64)  # draws by the rule in the docstring
product = rand32 * np.uint64(len(toy_alias))
column = (product >> np.uint64(32)).astype(np.int64)
drawn = np.where(product & np.uint64(2**32 - 1) < toy_alias[column, 0], column, toy_alias[column, 1])
test_close(np.bincount(drawn, minlength=len(counts)) / len(drawn), noise_distribution(counts), eps=3e-3)

# %% [markdown]
# ## 8. Subsampling frequent words
#
# "the", "a" and "of" fill a large part of any text and say little about their
# neighbours. Mikolov et al. discard each occurrence of word $w$ with probability
#
# $$P_{\text{discard}}(w) = 1 - \sqrt{t / f(w)}$$
#
# (zero when $f(w) \le t$), with $f(w)$ the word's share of the corpus and $t$ a threshold
# around $10^{-5}$. Subsampling shortens the corpus, speeds training, and lets windows
# reach further past the frequent words. This is the paper's formula, the one source
# 002 gives; word2vec.c (and gensim after it) keeps a word with probability
# $(\sqrt{f/t} + 1)\,t/f$ instead, a little more than $\sqrt{t/f}$.

# %%
#| export
def keep_probability(counts, t: float = 1e-5, rule: str = 'paper') -> np.ndarray:
    """Probability (float64, (V,)) of keeping each occurrence of each word under subsampling: min(1, sqrt(t / f(w)))
    by the paper's `rule`, min(1, sqrt(t / f(w)) + t / f(w)) by word2vec.c's (`rule='word2vec.c'`, as gensim)."""
    if rule not in ('paper', 'word2vec.c'):
        raise ValueError(f"keep_probability expected rule 'paper' or 'word2vec.c', got {rule!r}")
    counts = np.asarray(counts, dtype=np.float64)
    f = counts / counts.sum()
    with np.errstate(divide='ignore'):
        r = t / f
        return np.minimum(1.0, np.sqrt(r) + (r if rule == 'word2vec.c' else 0.0))

# %%
counts = np.array([60_000, 5_000, 50, 3])
keep = keep_probability(counts, t=1e-3)
print('f(w)', np.round(counts / counts.sum(), 5), '-> discard', np.round(1 - keep, 3))
test_close(1 - keep[0], 1 - np.sqrt(1e-3 / (60_000 / counts.sum())), eps=1e-12)
test_eq(keep[2:], [1.0, 1.0])
keep_c = keep_probability(counts, t=1e-3, rule='word2vec.c')                # (sqrt(f/t) + 1) t/f = sqrt(t/f) + t/f
f0 = 60_000 / counts.sum()
test_close(keep_c[0], (np.sqrt(f0 / 1e-3) + 1) * 1e-3 / f0, eps=1e-12); assert (keep_c >= keep).all()
print('word2vec.c keeps', np.round(keep_c, 3), 'where the paper keeps', np.round(keep, 3))
test_fail(lambda: keep_probability(counts, rule='gensim'), contains="rule 'paper' or 'word2vec.c', got 'gensim'")

# %% [markdown]
# ## 9. Using word vectors
#
# Words are compared by the **cosine** of their vectors. Nearest neighbours rank all
# words by cosine to one. An analogy "$a$ is to $b$ as $c$ is to ?" looks for the word
# nearest to $b - a + c$, the three input words excluded (Mikolov's 3CosAdd, with each
# vector first scaled to length 1, as gensim does). A 2-D picture comes from projecting
# onto the first two principal components.

# %%
#| export
def unit_rows(E) -> np.ndarray:
    "Rows of `E` (V, N) scaled to length 1 (zero rows stay zero)."
    n = np.linalg.norm(E, axis=1, keepdims=True)
    return E / np.where(n == 0, 1, n)

def nearest(E, vector, topn: int = 10, exclude=()):
    "The `topn` rows of E (V, N) with the largest cosine to `vector` (N,), `exclude`d ids left out: (ids, cosines)."
    En = unit_rows(E)
    cos = En @ (vector / max(np.linalg.norm(vector), 1e-30))
    cos[list(exclude)] = -np.inf
    ids = np.argsort(-cos, kind='stable')[:topn]
    return ids, cos[ids]

def analogy(E, a: int, b: int, c: int, topn: int = 1):
    "'a is to b as c is to ?': the ids nearest to unit(b) - unit(a) + unit(c), a, b, c excluded; (ids, cosines)."
    En = unit_rows(E)
    return nearest(E, En[b] - En[a] + En[c], topn, exclude=(a, b, c))

def pca_2d(E) -> np.ndarray:
    "Projection (V, 2) of the rows of E onto their first two principal components."
    X = E - E.mean(0)
    return X @ np.linalg.svd(X, full_matrices=False)[2][:2].T

# %% [markdown]
# Source 003's hand-made 4-feature vectors (gender, royal, age, food) make the analogy
# exact: $e_{\text{man}} - e_{\text{woman}} \approx e_{\text{king}} - e_{\text{queen}}$.

# %%
names = ['man', 'woman', 'king', 'queen', 'apple', 'orange']
E = np.array([[-1, 0.01, 0.03, 0.09], [1, 0.02, 0.02, 0.01], [-0.95, 0.93, 0.70, 0.02],
              [0.97, 0.95, 0.69, 0.01], [0.00, -0.01, 0.03, 0.95], [0.01, 0.00, -0.02, 0.97]])
ids, cos = analogy(E, names.index('man'), names.index('woman'), names.index('king'))
print(f"man : woman :: king : {names[ids[0]]} (cosine {cos[0]:.3f})")
test_eq(names[ids[0]], 'queen')
ids, cos = nearest(E, E[4], topn=2)
test_eq([names[i] for i in ids], ['apple', 'orange'])
P = pca_2d(E)
test_eq(P.shape, (6, 2))
test_close(np.abs(P[:, 0] @ P[:, 1]), 0, eps=1e-9)                 # the components are orthogonal

# %% [markdown]
# ### Benchmarks for word vectors
#
# Two public kinds of test score word vectors without a downstream task.
#
# **Analogies.** Mikolov et al. (2013a) wrote 19,544 questions "$a$ is to $b$ as $c$ is
# to $d$" in 14 sections: five *semantic* ones (capitals and countries, currencies,
# cities and states, family: *Athens Greece Baghdad Iraq*) and nine *syntactic* ones
# (adjective to adverb, opposites, comparatives, superlatives, participles,
# nationalities, past tenses, plurals of nouns and of verbs). A question counts as right
# when the 3CosAdd answer, the word nearest to $\hat e_b - \hat e_a + \hat e_c$ with $a,
# b, c$ excluded, is exactly $d$. As gensim's `evaluate_word_analogies` does, only the
# `restrict_vocab` most frequent words take part: a question with a word outside them is
# left out (and counted as such), and answers are searched among them only. The scores
# are therefore comparable only at one vocabulary size, which we state with each score.
# The questions are capitalised (*Athens*); our vocabularies are lowercase, so the
# questions are lowercased, as gensim's `case_insensitive=True` does.
#
# The search is vectorised: a batch of $B$ questions is one $(B, N)\times(N, V)$ product
# of unit vectors, then one `argmax` per row after the three input words are masked.
#
# **Similarity.** WordSim-353 (Finkelstein et al., 2002) and SimLex-999 (Hill et al.,
# 2015) give pairs of words with the mean of human ratings from 0 to 10. WordSim-353
# mixes similarity with relatedness (*cup* and *coffee* score high); SimLex-999 rates
# similarity alone (*clothes* and *closet* score low), which co-occurrence models find
# harder. The score is Spearman's $\rho$ between the cosines of the pairs and the human
# ratings: the Pearson correlation of their ranks, ties given the mean of the ranks they
# span. It asks only that the order be right, not the scale.
#
# The three files ship with the package, with their sources and licences
# (`dl_from_scratch/datasets/README.md`); they are the copies gensim distributes.

# %%
#| export
ANALOGY_SECTIONS_SEMANTIC = 5    # questions-words' first five sections are semantic, the nine gram* ones syntactic

def _dataset(name: str) -> Path:
    "Path of a file shipped in the package's `datasets` folder."
    import dl_from_scratch
    return Path(dl_from_scratch.__file__).resolve().parent / 'datasets' / name

def load_analogies(path=None) -> dict:
    """Mikolov's analogy questions (`questions-words.txt` shipped with the package, or `path` in its format):
    {section: [(a, b, c, d), ...]} in the file's order, words lowercased."""
    sections, current = {}, None
    for line in Path(path or _dataset('questions-words.txt')).read_text(encoding='utf-8').splitlines():
        if line.startswith(':'):
            current = sections.setdefault(line[1:].strip(), [])
        elif line.strip():
            words = tuple(line.lower().split())
            if current is None or len(words) != 4:
                raise ValueError(f"load_analogies expected ': section' headers and lines of 4 words, got {line!r}")
            current.append(words)
    return sections

WORD_SIMILARITY = {'wordsim353': 'wordsim353.tsv', 'simlex999': 'simlex999.txt'}

def load_word_similarity(name: str = 'wordsim353') -> list[tuple[str, str, float]]:
    "Word pairs with their mean human rating (0 to 10): `name` 'wordsim353' (353 pairs) or 'simlex999' (999)."
    if name not in WORD_SIMILARITY:
        raise ValueError(f"load_word_similarity expected one of {sorted(WORD_SIMILARITY)}, got {name!r}")
    pairs = []
    for line in _dataset(WORD_SIMILARITY[name]).read_text(encoding='utf-8').splitlines():
        if line.startswith('#') or not line.strip(): continue
        a, b, score = line.split('\t')
        pairs.append((a.lower(), b.lower(), float(score)))
    return pairs

# %%
questions = load_analogies()
test_eq(len(questions), 14); test_eq(sum(map(len, questions.values())), 19544)
test_eq(questions['capital-common-countries'][0], ('athens', 'greece', 'baghdad', 'iraq'))
test_eq(list(questions)[ANALOGY_SECTIONS_SEMANTIC], 'gram1-adjective-to-adverb')
ws, sl = load_word_similarity('wordsim353'), load_word_similarity('simlex999')
test_eq((len(ws), len(sl)), (353, 999)); test_eq(sl[0], ('old', 'new', 1.58))
test_fail(lambda: load_word_similarity('men'), contains="one of ['simlex999', 'wordsim353'], got 'men'")
print({k: len(v) for k, v in questions.items()})

# %%
#| export
class AnalogyScore(NamedTuple):
    "Questions answered right, asked (all four words known) and in the file, for one section or a group of them."
    correct: int
    asked: int
    total: int

    @property
    def accuracy(self) -> float: return self.correct / self.asked if self.asked else float('nan')

def _rows(vocab) -> dict:
    "word -> row of the vectors, for a `Vocab` or a list of words (row i is word i)."
    return vocab.stoi if hasattr(vocab, 'stoi') else {w: i for i, w in enumerate(vocab)}

def evaluate_analogies(E, vocab, questions=None, restrict_vocab: int | None = 30000, batch: int = 512) -> dict:
    """Accuracy of 3CosAdd on analogy questions, as gensim's `evaluate_word_analogies` counts it.

    `E` (V, N): word vectors, row i for id i of `vocab` (a `Vocab`, or a list of words ordered by falling
    frequency). `questions`: {section: [(a, b, c, d), ...]} (default `load_analogies()`). Only the first
    `restrict_vocab` rows take part (None: all): a question with a word beyond them is not asked, and answers are
    searched among them, `<pad>`/`<unk>` left out. Returns {section: AnalogyScore, ..., 'semantic', 'syntactic',
    'total'}, the groups for questions-words' sections (the first five are semantic)."""
    questions = load_analogies() if questions is None else questions
    rows = _rows(vocab)
    n = len(E) if restrict_vocab is None else min(int(restrict_vocab), len(E))
    En = unit_rows(np.asarray(E, dtype=np.float32)[:n])
    for special in ('<pad>', '<unk>'):
        if rows.get(special, n) < n: En[rows[special]] = 0       # never an answer: cosine 0 < any real answer's
    scores = {}
    for section, qs in questions.items():
        ids = np.array([[rows.get(w, n) for w in q] for q in qs], dtype=np.int64).reshape(-1, 4)
        ids = ids[(ids < n).all(1)]
        correct = 0
        for s in range(0, len(ids), batch):
            a, b, c, d = ids[s:s + batch].T
            S = (En[b] - En[a] + En[c]) @ En.T                    # (B, n): one product for the batch
            r = np.arange(len(a))
            S[r, a] = S[r, b] = S[r, c] = -np.inf
            correct += int((S.argmax(1) == d).sum())
        scores[section] = AnalogyScore(correct, len(ids), len(qs))
    names = list(scores)
    groups = {'semantic': names[:ANALOGY_SECTIONS_SEMANTIC], 'syntactic': names[ANALOGY_SECTIONS_SEMANTIC:], 'total': names}
    for g, members in groups.items():
        scores[g] = AnalogyScore(*(sum(getattr(scores[m], f) for m in members) for f in AnalogyScore._fields))
    return scores

# %% [markdown]
# A check on made-up vectors: four countries and their capitals, where each capital is
# its country plus one shared "capital of" offset, answer every question; a word beyond
# `restrict_vocab` takes its questions out of the count; and on random vectors the
# batched search finds what `analogy` finds one question at a time.

# %%
rng = np.random.default_rng(0)
countries = ['france', 'italy', 'spain', 'peru']
capital = rng.normal(size=8)
E_toy = np.vstack([np.zeros((2, 8)), rng.normal(size=(4, 8)) * 3, np.zeros((4, 8))])
E_toy[6:] = E_toy[2:6] + capital
toy_words = ['<pad>', '<unk>', *countries, 'paris', 'rome', 'madrid', 'lima']
qs_toy = {'capital': [(c1, p1, c2, p2) for c1, p1 in zip(countries, toy_words[6:])
                      for c2, p2 in zip(countries, toy_words[6:]) if c1 != c2]}
sc = evaluate_analogies(E_toy, toy_words, qs_toy, restrict_vocab=None)
print(sc['capital'], f"accuracy {sc['capital'].accuracy:.2f}")
test_eq(sc['capital'], AnalogyScore(12, 12, 12)); test_eq(sc['total'], sc['capital'])
sc = evaluate_analogies(E_toy, toy_words, qs_toy, restrict_vocab=9, batch=5)     # 'lima' (row 9) left out
test_eq((sc['capital'].correct, sc['capital'].asked), (6, 6))
E_rand, words_rand = rng.normal(size=(8, 3)), toy_words[2:]     # random vectors: as many right as `analogy` finds
one_by_one = sum(words_rand[analogy(E_rand, *(words_rand.index(w) for w in q[:3]))[0][0]] == q[3] for q in qs_toy['capital'])
test_eq(evaluate_analogies(E_rand, words_rand, qs_toy, restrict_vocab=None, batch=5)['capital'].correct, one_by_one)
print(f"random vectors: {one_by_one} of 12 right")

# %%
#| export
def rankdata(x) -> np.ndarray:
    "Ranks 1..n (float64, (n,)) of `x` (n,), tied values given the mean of the ranks they span."
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind='stable')
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])              # first position of each run of ties
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)      # mean of ranks starts+1 .. ends
    return ranks

def spearman(x, y) -> float:
    "Spearman's rank correlation of `x` and `y` (n,): the Pearson correlation of their ranks (ties averaged)."
    rx, ry = rankdata(x), rankdata(y)
    if len(rx) != len(ry) or len(rx) < 2:
        raise ValueError(f"spearman expected two arrays of one length >= 2, got {len(rx)} and {len(ry)}")
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float(rx @ ry / np.sqrt((rx @ rx) * (ry @ ry)))

class SimilarityScore(NamedTuple):
    "Spearman's rho of the cosines against the human ratings, over `pairs` of the `total` pairs (both words known)."
    spearman: float
    pairs: int
    total: int

def evaluate_similarity(E, vocab, pairs, restrict_vocab: int | None = 30000) -> SimilarityScore:
    """Spearman's rho between the cosines of word pairs and their human ratings, as gensim's `evaluate_word_pairs`.

    `E` (V, N), `vocab` as in `evaluate_analogies`; `pairs`: [(word1, word2, rating), ...] (e.g. from
    `load_word_similarity`) or a dataset name. Pairs with a word outside the first `restrict_vocab` rows are left out."""
    pairs = load_word_similarity(pairs) if isinstance(pairs, str) else pairs
    rows = _rows(vocab)
    n = len(E) if restrict_vocab is None else min(int(restrict_vocab), len(E))
    known = [(rows[a], rows[b], s) for a, b, s in pairs if rows.get(a, n) < n and rows.get(b, n) < n]
    if len(known) < 2:
        raise ValueError(f"evaluate_similarity expected at least 2 pairs with both words known, got {len(known)}")
    a, b, human = (np.array(col) for col in zip(*known))
    En = unit_rows(np.asarray(E, dtype=np.float64))
    return SimilarityScore(spearman((En[a] * En[b]).sum(1), human), len(known), len(pairs))

# %% [markdown]
# Ties are what make ranks subtle: the ratings 1, 2, 2, 3 have ranks 1, 2.5, 2.5, 4. A
# cosine that orders pairs exactly as the humans do scores 1, whatever its scale; the
# reverse order scores −1.

# %%
test_eq(rankdata([1, 2, 2, 3]), [1, 2.5, 2.5, 4]); test_eq(rankdata([5, 5, 5]), [2, 2, 2])
test_eq(rankdata([3, 1, 2]), [3, 1, 2])
test_close(spearman([1, 2, 3, 4], [10, 20, 30, 1000]), 1.0); test_close(spearman([1, 2, 3], [3, 2, 1]), -1.0)
test_fail(lambda: spearman([1], [2]), contains='one length >= 2, got 1 and 1')
toy_pairs = [('france', 'paris', 9.0), ('italy', 'rome', 9.0), ('france', 'lima', 1.0), ('spain', 'rome', 2.0),
             ('france', 'snow', 5.0)]                                   # 'snow' is unknown: left out
E_pairs = E_toy.copy()
sc = evaluate_similarity(E_pairs, toy_words, toy_pairs, restrict_vocab=None)
cos = lambda i, j: E_pairs[i] @ E_pairs[j] / np.linalg.norm(E_pairs[i]) / np.linalg.norm(E_pairs[j])
test_eq(sc.pairs, 4); test_eq(sc.total, 5)
test_close(sc.spearman, spearman([cos(2, 6), cos(3, 7), cos(2, 9), cos(4, 7)], [9, 9, 1, 2]))
test_fail(lambda: evaluate_similarity(E_toy, toy_words, toy_pairs[:1]), contains='at least 2 pairs')
print(sc)

# %% [markdown]
# ## 10. Phrases
#
# "San Antonio" is one name in two words; word2vec learns a better vector for it as one
# token `san_antonio`. Source 002 finds such pairs with gensim's `Phrases(min_count=25,
# threshold=50)`, which scores each pair of adjacent words $a\,b$ as Mikolov et al.
# (2013b) did, scaled by the size $|V|$ of the vocabulary counted (words and pairs):
#
# $$\operatorname{score}(a, b) = \frac{\operatorname{count}(a\,b) - \delta}{\operatorname{count}(a)\,\operatorname{count}(b)}\,|V|,$$
#
# with the discount $\delta$ = `min_count`, so a pair seen fewer times than that never
# scores above zero. A pair whose words mostly occur together scores high; one of two
# frequent words that meet by chance ("of the") scores low. Pairs scoring above
# `threshold` are joined with `_`, left to right.

# %%
#| export
def phrases(sentences, min_count: int = 25, threshold: float = 50.0) -> dict:
    """Bigrams of `sentences` (lists of tokens) scoring above `threshold` by gensim's original scorer:
    {(a, b): score}, score = (count(a b) - min_count) / (count(a) count(b)) * |V| (|V| = distinct words and pairs)."""
    words, pairs = Counter(), Counter()
    for s in sentences:
        words.update(s); pairs.update(zip(s, s[1:]))
    V = len(words) + len(pairs)
    scores = {(a, b): (c - min_count) / (words[a] * words[b]) * V for (a, b), c in pairs.items()}
    return {p: sc for p, sc in scores.items() if sc > threshold}

def join_phrases(tokens, bigrams) -> list[str]:
    "`tokens` with each pair of `bigrams` (a set or dict of (a, b)) joined as 'a_b', left to right, without overlaps."
    out, i = [], 0
    while i < len(tokens):
        if i + 1 < len(tokens) and (tokens[i], tokens[i + 1]) in bigrams:
            out.append(tokens[i] + '_' + tokens[i + 1]); i += 2
        else:
            out.append(tokens[i]); i += 1
    return out

# %%
rng = np.random.default_rng(0)
filler = [f'w{i}' for i in range(3000)]                   # rare words, which make most pairs seen once
sents = [list(rng.choice(filler, 10)) for _ in range(600)]
sents += [list(rng.choice(filler, 6)) + ['san', 'antonio'] + list(rng.choice(filler, 3)) for _ in range(50)]
sents += [['of', 'the'] + list(rng.choice(filler, 4)) + ['of', 'a', 'the', 'of'] for _ in range(200)]
found = phrases(sents, min_count=25, threshold=50)
print({f'{a}_{b}': round(sc, 1) for (a, b), sc in found.items()})
test_eq(set(found), {('san', 'antonio')})
test_eq(join_phrases(['in', 'san', 'antonio', 'of', 'the'], found), ['in', 'san_antonio', 'of', 'the'])
test_eq(join_phrases(['a', 'a', 'a'], {('a', 'a')}), ['a_a', 'a'])

# %% [markdown]
# ## 11. GloVe
#
# word2vec learns from one window at a time. GloVe (Pennington et al., 2014; source 003)
# first counts, over the whole corpus, how often word $j$ appears in the context of word $i$:
# $X_{ij}$ (here weighted by $1/d$ for a neighbour at distance $d$, as GloVe's own program
# does; symmetric, $X_{ij} = X_{ji}$). It then fits vectors to the logarithm of the counts,
# by weighted least squares over the pairs that occur:
#
# $$J = \sum_{i,j:\,X_{ij}>0} f(X_{ij})\,\big(\theta_i^\top e_j + b_i + b'_j - \log X_{ij}\big)^2,\qquad
# f(x) = \min\big(1, (x/x_{\max})^{3/4}\big),\ x_{\max} = 100.$$
#
# $f$ gives rare pairs (whose counts are noisy) little weight and stops very frequent
# pairs ("of the") from dominating; $f(0) = 0$ makes the pairs that never occur drop out
# ("$0\log 0 = 0$"). With the residual $r_{ij} = \theta_i^\top e_j + b_i + b'_j - \log X_{ij}$,
#
# $$\frac{\partial J}{\partial\theta_i} = \sum_j 2 f(X_{ij})\,r_{ij}\,e_j,\quad
# \frac{\partial J}{\partial e_j} = \sum_i 2 f(X_{ij})\,r_{ij}\,\theta_i,\quad
# \frac{\partial J}{\partial b_i} = \sum_j 2 f(X_{ij})\,r_{ij},\quad
# \frac{\partial J}{\partial b'_j} = \sum_i 2 f(X_{ij})\,r_{ij}.$$
#
# $\theta$ and $e$ play symmetric roles, so the word vector kept is their average
# $(\theta_w + e_w)/2$. We minimise $J$ with AdaGrad, as GloVe's program does, here over
# all pairs at once. With a vocabulary of a few thousand words, $X$ fits in memory as a
# dense $V\times V$ matrix, and the sums above are three matrix products:
# $R = \Theta E^\top + b\mathbf 1^\top + \mathbf 1 b'^\top - \log X$, $G = 2 f(X)\odot R$,
# $\partial J/\partial\Theta = G E$, $\partial J/\partial E = G^\top\Theta$ (entries with $X_{ij} = 0$
# have $f = 0$).

# %%
#| export
def cooccurrence(ids, window: int, V: int) -> np.ndarray:
    "Symmetric co-occurrence counts X (float64, (V, V)) of the 1-D id array `ids`, a neighbour at distance d counting 1/d."
    ids = _check_window(ids, window, 'cooccurrence').astype(np.int64)
    X = np.zeros(V * V)
    for d in range(1, window + 1):
        a, b = ids[:-d], ids[d:]
        X += np.bincount(np.r_[a * V + b, b * V + a], minlength=V * V) / d
    return X.reshape(V, V)

def glove_weights(X, x_max: float = 100.0, power: float = 0.75):
    "The weights f(X) = min(1, (X/x_max)^power) and log X (0 where X = 0) of GloVe's loss, both (V, V)."
    f = np.minimum(1.0, (X / x_max) ** power)
    return f, np.log(np.where(X > 0, X, 1))

def glove_loss_grad(theta, e, b, b2, f, log_x):
    """GloVe's weighted least squares J (pairs with f = f(X) > 0 count) and its gradients:
    (J, dtheta (V, N), de (V, N), db (V,), db2 (V,)). `f`, `log_x` (V, V): from `glove_weights`."""
    R = theta @ e.T + b[:, None] + b2[None, :] - log_x
    G = 2 * f * R
    return float((f * R * R).sum()), G @ e, G.T @ theta, G.sum(1), G.sum(0)

def glove_train(X, N: int, epochs: int = 100, lr: float = 0.05, seed: int = 0, dtype=np.float32):
    """Fit GloVe vectors to X (V, V) with full-batch AdaGrad, in `dtype`; returns the word vectors
    (theta + e) / 2, (V, N), and the loss of each epoch."""
    V = len(X)
    f, log_x = (a.astype(dtype) for a in glove_weights(X))
    rng = np.random.default_rng(seed)
    params = [((rng.random((V, N)) - 0.5) / N).astype(dtype), ((rng.random((V, N)) - 0.5) / N).astype(dtype),
              np.zeros(V, dtype), np.zeros(V, dtype)]
    hist = [np.full_like(p, 1e-8) for p in params]
    losses = []
    for _ in range(epochs):
        loss, *grads = glove_loss_grad(*params, f, log_x)
        losses.append(loss)
        for p, h, g in zip(params, hist, grads):
            h += g * g; p -= lr * g / np.sqrt(h)
    return (params[0] + params[1]) / 2, losses

# %%
ids = np.array([0, 1, 2, 0, 1, 3, 0, 2])
X = cooccurrence(ids, 2, 4)
print(X)
test_eq(X, X.T); test_eq(X[0, 1], 1 + 1 + 0.5 + 0.5)           # 0 and 1: adjacent twice, twice at distance 2
rng = np.random.default_rng(0)
P = [rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=4), rng.normal(size=4)]
W60 = glove_weights(X * 60)                              # counts above and below x_max
J, *grads = glove_loss_grad(*P, *W60)
for k, (name, g) in enumerate(zip(['theta', 'e', 'b', "b'"], grads)):
    def J_of(z, k=k): Q = list(P); Q[k] = z; return glove_loss_grad(*Q, *W60)[0]
    err = rel_error(g, numerical_grad(J_of, P[k].copy()))
    print(f"GloVe gradient check d{name}: {err:.1e}"); assert err < 1e-6
vec, losses = glove_train(X, 3, epochs=300, lr=0.1, dtype=np.float64)
print(f"AdaGrad on this toy: J from {losses[0]:.3f} to {losses[-1]:.5f}")
assert losses[-1] < 0.01 * losses[0]

# %% [markdown]
# GloVe on Shakespeare: the 2,000 most frequent ids (so that $X$ and the products stay
# small), 100 dimensions, window 10 (GloVe's default); 25 AdaGrad epochs in the quick
# run, 150 in the full one:

# %%
GLOVE_EPOCHS = 25

# %%
#| slow
GLOVE_EPOCHS = 150

# %%
#| tiny_shakespeare
shakespeare = load('tiny_shakespeare', 'train', progress=False)
lines_sh = [tokenize(l, punctuation=False) for l in shakespeare.split('\n') if any(ch.isalnum() for ch in l)]
vocab_sh = Vocab(Counter(w for l in lines_sh for w in l), max_size=2000)
ids_sh = np.array([vocab_sh[w] for l in lines_sh for w in l]); ids_sh = ids_sh[ids_sh != 1]
X_sh = cooccurrence(ids_sh, 10, len(vocab_sh))
t0 = time.perf_counter()
E_glove, losses = glove_train(X_sh, 100, epochs=GLOVE_EPOCHS)
print(f"{(X_sh > 0).sum():,} co-occurring pairs; {GLOVE_EPOCHS} AdaGrad epochs in {time.perf_counter() - t0:.0f} s, "
      f"J from {losses[0]:,.0f} to {losses[-1]:,.0f}")
for w in ['king', 'father', 'thou', 'night']:
    ids_, cos = nearest(E_glove, E_glove[vocab_sh[w]], 6, exclude=[0, 1, vocab_sh[w]])
    print(f"{w:>7s}: " + ', '.join(f"{vocab_sh.itos[i]} {c:.2f}" for i, c in zip(ids_, cos)))

# %% [markdown]
# ## 12. Debiasing
#
# Word vectors learn what the text says, prejudice included: "man is to programmer as
# woman is to homemaker" (Bolukbasi et al., 2016; source 003). Their fix has three steps.
#
# 1. **Find the bias direction** $g$: the average of differences of definitional pairs,
#    $e_{he} - e_{she}$, $e_{man} - e_{woman}$, ...
# 2. **Neutralise** every word that should not carry gender (not the definitional ones,
#    *beard*, *king*): remove its component along $g$,
#    $e \leftarrow e - \frac{e\cdot g}{\lVert g\rVert^2}\,g$.
# 3. **Equalise** each definitional pair $(w_1, w_2)$ so that both lie at the same distance
#    from every neutral word: give them the same component orthogonal to $g$, their mean's
#    $\mu_\perp$, and opposite components along $g$, scaled so that unit vectors stay unit
#    vectors:
#    $$e_{w_k} \leftarrow \mu_\perp + \sqrt{\lvert 1 - \lVert\mu_\perp\rVert^2\rvert}\;
#    \frac{e_{w_k,B} - \mu_B}{\lVert e_{w_k,B} - \mu_B\rVert},$$
#    with $\mu = (e_{w_1}+e_{w_2})/2$ and $x_B$ the component of $x$ along $g$. (The
#    deeplearning.ai assignment divides by $\lVert (e_{w_k} - \mu_\perp) - \mu_B\rVert$
#    instead, which keeps the two opposite but not of unit length.)

# %%
#| export
def bias_direction(E, pairs) -> np.ndarray:
    "The bias direction: the mean of E[a] - E[b] over the id `pairs` (a, b), of unit vectors."
    En = unit_rows(E)
    return np.mean([En[a] - En[b] for a, b in pairs], axis=0)

def neutralize(e, g) -> np.ndarray:
    "`e` (N,) with its component along `g` (N,) removed."
    return e - (e @ g) / (g @ g) * g

def equalize(e1, e2, g):
    "Equalise the pair (e1, e2) (N,) about the direction `g`: one orthogonal part, opposite unit-scaled parts along g."
    e1, e2 = e1 / np.linalg.norm(e1), e2 / np.linalg.norm(e2)
    along = lambda x: (x @ g) / (g @ g) * g
    mu = (e1 + e2) / 2
    mu_B = along(mu); mu_perp = mu - mu_B
    scale = np.sqrt(abs(1 - mu_perp @ mu_perp))
    return tuple(mu_perp + scale * (along(e) - mu_B) / np.linalg.norm(along(e) - mu_B) for e in (e1, e2))

# %%
rng = np.random.default_rng(3)
g, e = rng.normal(size=5), rng.normal(size=5)
test_close(neutralize(e, g) @ g, 0, eps=1e-12)
a, b = equalize(rng.normal(size=5), rng.normal(size=5), g)
test_close(neutralize(a, g), neutralize(b, g), eps=1e-12)              # the same part orthogonal to g
test_close(a @ g, -(b @ g), eps=1e-12)                                 # opposite along g
test_close([np.linalg.norm(a), np.linalg.norm(b)], [1, 1], eps=1e-12)
n = rng.normal(size=5); n = neutralize(n, g)
test_close(np.linalg.norm(a - n), np.linalg.norm(b - n), eps=1e-12)    # equidistant from any neutral word

# %% [markdown]
# On the Shakespeare GloVe vectors: the bias direction from five definitional pairs, the
# cosine with it of a few words before and after neutralising, and an equalised pair.

# %%
#| tiny_shakespeare
pairs = [(vocab_sh[a], vocab_sh[b]) for a, b in
         [('he', 'she'), ('him', 'her'), ('man', 'woman'), ('king', 'queen'), ('father', 'mother')]]
g = bias_direction(E_glove, pairs)
cos_g = lambda v: float(v @ g / (np.linalg.norm(v) * np.linalg.norm(g)))
for w in ['beauty', 'fair', 'sword', 'war', 'gentle', 'honour']:
    e = E_glove[vocab_sh[w]]
    print(f"{w:>7s}: cosine with g {cos_g(e):+.3f}, after neutralising {cos_g(neutralize(e, g)):+.3f}")
e1, e2 = equalize(E_glove[vocab_sh['husband']], E_glove[vocab_sh['wife']], g)
print(f"husband/wife along g before {cos_g(E_glove[vocab_sh['husband']]):+.3f} / {cos_g(E_glove[vocab_sh['wife']]):+.3f}, "
      f"after equalising {cos_g(e1):+.3f} / {cos_g(e2):+.3f}")

# %% [markdown]
# ## What the sources got wrong, and what comes next
#
# * Source 002's `Single_context_CBOW` computes `np.dot(W2.T, e)`, which NumPy refuses for
#   $N \ne V$; the gradient of the input vectors is $W_2 e$, giving $\partial L/\partial W_1$ of
#   shape $V\times N$ (section 5). Its CBOW loss derivation has a sign slip on the way to
#   the right result.
# * Source 002 gives negative sampling's noise distribution but no loss; section 7 writes
#   out the loss and its gradients, which are the hierarchical softmax's with other labels.
# * Its subsampling formula is the paper's; word2vec.c and gensim use another (section 8).
# * Source 003's GloVe objective and debiasing steps are right; the deeplearning.ai
#   equalisation it follows does not keep unit vectors at unit length (section 12).
#
# Chapter 12a makes skip-gram with negative sampling fast (a Numba CPU kernel with
# lock-free parallel SGD, and a CUDA kernel) and trains word vectors on real text.
#
# ## References
#
# * T. Mikolov, K. Chen, G. Corrado, J. Dean, *Efficient Estimation of Word Representations in Vector Space*, 2013 (CBOW, skip-gram, hierarchical softmax).
# * T. Mikolov, I. Sutskever, K. Chen, G. Corrado, J. Dean, *Distributed Representations of Words and Phrases and their Compositionality*, NeurIPS 2013 (negative sampling, subsampling).
# * X. Rong, *word2vec Parameter Learning Explained*, 2014 (the gradients of section 5).
# * R. Sennrich, B. Haddow, A. Birch, *Neural Machine Translation of Rare Words with Subword Units*, ACL 2016 (BPE); P. Gage, *A New Algorithm for Data Compression*, 1994.
# * D. A. Huffman, *A Method for the Construction of Minimum-Redundancy Codes*, 1952.
# * A. J. Walker, *An Efficient Method for Generating Discrete Random Variables with General Distributions*, ACM TOMS 3(3), 1977; M. D. Vose, *A Linear Algorithm for Generating Random Numbers with a Given Distribution*, IEEE TSE 17(9), 1991 (the alias method).
# * J. Pennington, R. Socher, C. Manning, *GloVe: Global Vectors for Word Representation*, EMNLP 2014.
# * T. Bolukbasi, K.-W. Chang, J. Zou, V. Saligrama, A. Kalai, *Man is to Computer Programmer as Woman is to Homemaker? Debiasing Word Embeddings*, NeurIPS 2016.
# * A. L. Maas et al., *Learning Word Vectors for Sentiment Analysis*, ACL 2011 (the IMDB reviews).
# * Source 002 (*Hands-On Deep Learning Algorithms with Python*, ch. 7) and source 003 (deeplearning.ai C5 W2; the TensorFlow word2vec tutorial).
