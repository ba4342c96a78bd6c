"""The built-in synthetic language pair: a known lexicon and known gold alignments, generated here.

Two invented languages with disjoint sound systems (so no word is spelled the same on both sides and
nothing can be learnt from identical strings):

* source: consonants ``p t k m n s l r w``, vowels ``a i u``; target: ``b d g v z f h j``, ``e o a``;
* content words (nouns, verbs, adjectives, adverbs) drawn with Zipfian frequencies, as in real text;
* morphology with shared stems, so subword-aware embeddings have something to gain: source nouns take
  plural ``-si``, verbs ``-ra`` (present) / ``-tu`` (past); target nouns ``-a`` / ``-ek``, verbs ``-es`` / ``-od``;
* a one-to-one lexicon for most words, a few one-to-many words (one source word → two target words);
* function words aligned to nothing: source determiners (dropped in the target) and a target object
  marker (no source counterpart);
* local reordering: adjectives precede the noun in the source and follow it in the target, so the gold
  alignment is not the diagonal.

The gold alignment is the one the sentences were generated with.  Everything is deterministic by seed.
"""
from __future__ import annotations

import functools
import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from xlfast.errors import XlfastError

SRC_SOUNDS = ("ptkmnslrw", "aiu")
TGT_SOUNDS = ("bdgvzfhj", "eoa")
SRC_SUFFIX = {"sg": "", "pl": "si", "present": "ra", "past": "tu"}
TGT_SUFFIX = {"sg": "a", "pl": "ek", "present": "es", "past": "od"}
SRC_DETERMINERS = ("ka", "ti", "mu")  # NULL-aligned: the target has no articles
TGT_OBJECT_MARKER = "vo"  # NULL-aligned: the source marks objects by position only
MIN_LEN, MAX_LEN = 4, 15
# shares of the content vocabulary
SHARES = {"noun": 0.45, "verb": 0.25, "adj": 0.15, "adv": 0.08, "prep": 0.07}
ONE_TO_MANY_SHARE = 0.1  # nouns and verbs translated by two target words


@dataclass
class Lemma:
    pos: str
    src: str  # source stem
    tgt: str  # target stem
    tgt_extra: Optional[str] = None  # the second target word of a one-to-many lemma


@dataclass
class SyntheticPair:
    src_sents: list[list[str]]
    tgt_sents: list[list[str]]
    lexicon: list[tuple[str, str]]  # every (source word, target word) translation that occurs
    gold: list[set[tuple[int, int]]]  # 0-based links per sentence pair
    seed: int = 0
    null_src_words: tuple[str, ...] = SRC_DETERMINERS
    null_tgt_words: tuple[str, ...] = (TGT_OBJECT_MARKER,)
    files: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.src_sents)

    def validate(self) -> None:
        """Check the invariants every consumer relies on; raise XlfastError naming the first broken one."""
        if not (len(self.src_sents) == len(self.tgt_sents) == len(self.gold)):
            raise XlfastError("synthetic pair: sentence and gold counts differ")
        translations = set(self.lexicon)
        for k, (src, tgt, links) in enumerate(zip(self.src_sents, self.tgt_sents, self.gold)):
            for sent in (src, tgt):
                if not MIN_LEN <= len(sent) <= MAX_LEN:
                    raise XlfastError(f"synthetic pair {k}: length {len(sent)} outside {MIN_LEN}-{MAX_LEN}")
            for i, j in links:
                if not (0 <= i < len(src) and 0 <= j < len(tgt)):
                    raise XlfastError(f"synthetic pair {k}: link {i}-{j} out of range")
                if (src[i], tgt[j]) not in translations:
                    raise XlfastError(f"synthetic pair {k}: link {src[i]}-{tgt[j]} is not in the lexicon")
            aligned_src = {i for i, _ in links}
            aligned_tgt = {j for _, j in links}
            for i, w in enumerate(src):
                if (i in aligned_src) == (w in self.null_src_words):
                    raise XlfastError(f"synthetic pair {k}: source word {w!r} wrongly (un)aligned")
            for j, w in enumerate(tgt):
                if (j in aligned_tgt) == (w in self.null_tgt_words):
                    raise XlfastError(f"synthetic pair {k}: target word {w!r} wrongly (un)aligned")

    def write(self, directory) -> dict[str, Path]:
        """Write corpus.tsv, lexicon.txt and gold.align into ``directory``, then read them back through the
        io layer and check they hold exactly this pair.  Returns the paths by name."""
        from xlfast.io import atomic_write_text, read_alignments, read_dictionary, read_parallel, write_alignments

        self.validate()
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise XlfastError(f"{d}: exists and is not a directory")
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise XlfastError(f"{d}: cannot create the directory ({exc.strerror or exc})") from None
        files = {"corpus": d / "corpus.tsv", "lexicon": d / "lexicon.txt", "gold": d / "gold.align"}
        atomic_write_text(files["corpus"], "".join(f"{' '.join(s)}\t{' '.join(t)}\n"
                                                   for s, t in zip(self.src_sents, self.tgt_sents)))
        atomic_write_text(files["lexicon"], "".join(f"{s} {t}\n" for s, t in self.lexicon))
        write_alignments(files["gold"], self.gold)

        corpus = read_parallel(files["corpus"])
        lexicon = read_dictionary(files["lexicon"])
        gold = read_alignments(files["gold"], base=0, src_lens=[len(s.split()) for s in corpus.src],
                               tgt_lens=[len(t.split()) for t in corpus.tgt])
        if ([s.split() for s in corpus.src] != self.src_sents or [t.split() for t in corpus.tgt] != self.tgt_sents
                or lexicon != self.lexicon or gold.sure != self.gold):
            raise XlfastError(f"{d}: the files written do not read back as the synthetic pair")
        self.files = files
        return files


def _word(rng: random.Random, sounds: tuple[str, str], syllables: int) -> str:
    consonants, vowels = sounds
    return "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))


def _make_lemmas(rng: random.Random, vocab: int) -> dict[str, list[Lemma]]:
    taken_src = set(SRC_DETERMINERS)
    taken_tgt = {TGT_OBJECT_MARKER}

    def fresh(sounds, taken, close: bool) -> str:
        while True:
            w = _word(rng, sounds, rng.choice((2, 2, 3)))
            if close:  # target stems end in a consonant so that -a / -ek / -es / -od attach cleanly
                w += rng.choice(sounds[0])
            # no stem may be another stem plus a suffix (or the reverse): every surface form is unique
            if all(w != t and not w.startswith(t) and not t.startswith(w) for t in taken):
                taken.add(w)
                return w

    lemmas: dict[str, list[Lemma]] = {}
    for pos, share in SHARES.items():
        count = max(2, round(vocab * share))
        inflected = pos in ("noun", "verb")
        group = []
        for _ in range(count):
            lemma = Lemma(pos, fresh(SRC_SOUNDS, taken_src, False), fresh(TGT_SOUNDS, taken_tgt, inflected))
            if inflected and rng.random() < ONE_TO_MANY_SHARE:
                lemma.tgt_extra = fresh(TGT_SOUNDS, taken_tgt, False)
            group.append(lemma)
        lemmas[pos] = group
    return lemmas


class _Builder:
    """Appends aligned units to a sentence pair, keeping the gold links in step."""

    def __init__(self):
        self.src: list[str] = []
        self.tgt: list[str] = []
        self.links: set[tuple[int, int]] = set()

    def add(self, src_words: list[str], tgt_words: list[str], links: list[tuple[int, int]]) -> None:
        base_s, base_t = len(self.src), len(self.tgt)
        self.src += src_words
        self.tgt += tgt_words
        self.links |= {(base_s + i, base_t + j) for i, j in links}


@functools.lru_cache(maxsize=None)
def _zipf_cumulative(n: int) -> list[float]:
    # what random.choices accumulates from the weights 1/rank itself: the same draws, without O(n) per pick
    return list(itertools.accumulate(1.0 / (rank + 1) for rank in range(n)))


def _zipf_pick(rng: random.Random, group: list[Lemma]) -> Lemma:
    return rng.choices(group, cum_weights=_zipf_cumulative(len(group)))[0]


def _noun_phrase(rng, lemmas, b: _Builder, lexicon: set, obj: bool) -> None:
    det = [rng.choice(SRC_DETERMINERS)] if rng.random() < 0.6 else []
    adjs = [_zipf_pick(rng, lemmas["adj"]) for _ in range(rng.choice((0, 0, 1, 1, 2)))]
    noun = _zipf_pick(rng, lemmas["noun"])
    number = rng.choice(("sg", "sg", "pl"))
    src_noun, tgt_noun = noun.src + SRC_SUFFIX[number], noun.tgt + TGT_SUFFIX[number]
    # source: det adj* noun ; target: noun [extra] adj* [object marker]
    src = det + [a.src for a in adjs] + [src_noun]
    tgt = [tgt_noun] + ([noun.tgt_extra] if noun.tgt_extra else [])
    n_noun = len(tgt)
    tgt += [a.tgt for a in adjs] + ([TGT_OBJECT_MARKER] if obj else [])
    links = [(len(src) - 1, j) for j in range(n_noun)]
    links += [(len(det) + k, n_noun + k) for k in range(len(adjs))]
    lexicon.update((src_noun, t) for t in tgt[:n_noun])
    lexicon.update((a.src, a.tgt) for a in adjs)
    b.add(src, tgt, links)


def _verb(rng, lemmas, b: _Builder, lexicon: set) -> None:
    verb = _zipf_pick(rng, lemmas["verb"])
    tense = rng.choice(("present", "past"))
    src = [verb.src + SRC_SUFFIX[tense]]
    tgt = [verb.tgt + TGT_SUFFIX[tense]] + ([verb.tgt_extra] if verb.tgt_extra else [])
    lexicon.update((src[0], t) for t in tgt)
    b.add(src, tgt, [(0, j) for j in range(len(tgt))])
    if rng.random() < 0.3:
        adv = _zipf_pick(rng, lemmas["adv"])
        lexicon.add((adv.src, adv.tgt))
        b.add([adv.src], [adv.tgt], [(0, 0)])


def _sentence(rng, lemmas, lexicon: set) -> _Builder:
    b = _Builder()
    _noun_phrase(rng, lemmas, b, lexicon, obj=False)
    _verb(rng, lemmas, b, lexicon)
    if rng.random() < 0.75:
        _noun_phrase(rng, lemmas, b, lexicon, obj=True)
    for _ in range(rng.choice((0, 1, 1, 2))):
        prep = _zipf_pick(rng, lemmas["prep"])
        lexicon.add((prep.src, prep.tgt))
        b.add([prep.src], [prep.tgt], [(0, 0)])
        _noun_phrase(rng, lemmas, b, lexicon, obj=False)
    return b


def sentence_pairs(n_sentences: int, vocab: int = 120, seed: int = 0):
    """Stream ``n_sentences`` synthetic (source words, target words, gold links, translations used) over
    about ``vocab`` content lemmas, holding none of them (large corpora for benchmarks)."""
    if n_sentences < 1 or vocab < 10:
        raise XlfastError("synthetic pair: need at least 1 sentence and a vocabulary of at least 10")
    rng = random.Random(seed)
    lemmas = _make_lemmas(rng, vocab)
    made = 0
    while made < n_sentences:
        lexicon_here: set[tuple[str, str]] = set()
        b = _sentence(rng, lemmas, lexicon_here)
        if not (MIN_LEN <= len(b.src) <= MAX_LEN and MIN_LEN <= len(b.tgt) <= MAX_LEN):
            continue  # redraw: lengths stay in range without skewing one template
        made += 1
        yield b.src, b.tgt, b.links, lexicon_here


def make_pair(n_sentences: int = 600, vocab: int = 120, seed: int = 0) -> SyntheticPair:
    """A synthetic parallel corpus of ``n_sentences`` pairs over about ``vocab`` content lemmas."""
    src_sents, tgt_sents, gold = [], [], []
    used: set[tuple[str, str]] = set()
    for src, tgt, links, lexicon_here in sentence_pairs(n_sentences, vocab, seed):
        used |= lexicon_here
        src_sents.append(src)
        tgt_sents.append(tgt)
        gold.append(links)
    lexicon = sorted(used)
    pair = SyntheticPair(src_sents, tgt_sents, lexicon, gold, seed)
    pair.validate()
    return pair


# ------------------------------------------------------------------------------------------------
# Two monolingual corpora of one "world" (for `xlfast train --mono`)


@dataclass
class MonoPair:
    """Two monolingual corpora with no sentence in common, written over the same sequences of concepts
    with each language's own words: the word-to-word statistics are isomorphic, so a multilingual LM
    can recover the lexicon from the text alone."""

    src_sents: list[list[str]]
    tgt_sents: list[list[str]]
    lexicon: list[tuple[str, str]]  # concept by concept: (source word, target word)

    def write(self, directory) -> dict[str, Path]:
        """mono.src, mono.tgt (one sentence a line) and lexicon.txt in ``directory``."""
        from xlfast.io import atomic_write_text

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        files = {"src": d / "mono.src", "tgt": d / "mono.tgt", "lexicon": d / "lexicon.txt"}
        atomic_write_text(files["src"], "".join(" ".join(s) + "\n" for s in self.src_sents))
        atomic_write_text(files["tgt"], "".join(" ".join(s) + "\n" for s in self.tgt_sents))
        atomic_write_text(files["lexicon"], "".join(f"{s} {t}\n" for s, t in self.lexicon))
        return files


def make_mono_pair(concepts: int = 40, n_sentences: int = 2000, successors: int = 3, seed: int = 0) -> MonoPair:
    """Sentences are walks over a random sparse chain of `concepts` (each concept has `successors`
    likely next concepts, 10% random jumps, Zipfian first concept); each language samples its own
    walks, so the corpora are comparable, not parallel."""
    if concepts < 2 or n_sentences < 1:
        raise XlfastError("synthetic mono pair: need at least 2 concepts and 1 sentence")
    rng = random.Random(seed)
    nxt = [rng.sample(range(concepts), min(successors, concepts)) for _ in range(concepts)]
    taken: set[str] = set()

    def fresh(sounds) -> str:
        while True:
            w = _word(rng, sounds, rng.choice((2, 3)))
            if w not in taken:
                taken.add(w)
                return w

    words = [(fresh(SRC_SOUNDS), fresh(TGT_SOUNDS)) for _ in range(concepts)]

    def walks(r: random.Random) -> list[list[int]]:
        out = []
        for _ in range(n_sentences):
            c = min(int(r.paretovariate(1.0)) - 1, concepts - 1)
            sent = [c]
            for _ in range(r.randint(MIN_LEN, 12) - 1):
                c = r.choice(nxt[c]) if r.random() < 0.9 else r.randrange(concepts)
                sent.append(c)
            out.append(sent)
        return out

    src = [[words[c][0] for c in s] for s in walks(random.Random(rng.random()))]
    tgt = [[words[c][1] for c in s] for s in walks(random.Random(rng.random()))]
    return MonoPair(src, tgt, words)
