"""Scores the field uses: AER for word alignments, P@k with coverage for bilingual lexicon induction.

AER (Och & Ney 2003): with predicted links A, sure gold links S and possible links P (S ⊆ P),
precision = |A∩P|/|A|, recall = |A∩S|/|S|, AER = 1 − (|A∩S| + |A∩P|)/(|A| + |S|); counts are summed
over the corpus before dividing (the standard corpus-level figure, not a mean of sentence scores).

BLI as MUSE and vecmap evaluate it (Conneau et al. 2018; Artetxe et al. 2018): every dictionary source
word found in the source vocabulary is a query; its neighbours are retrieved from the WHOLE target
vocabulary through `xlfast.kernels.csls.topk` (CSLS with K neighbours, or plain cosine); it is correct at
k if any gold translation is among the top k. Queries whose translations are all missing from the target
vocabulary are not scored and are reported through coverage. `bli` returns fractions; what users see
(`lexicon_induction`, `in_percent`) is in percent, as the field reports P@k.

`aer_files`, `lexicon_induction` and `nearest_words` are `xlfast eval aer`, `xlfast eval bli` and `xlfast nn`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from xlfast.errors import InputError, UsageError, XlfastError

Link = tuple[int, int]
BLI_METHODS = ("csls", "nn")  # CSLS retrieval, plain nearest neighbour (cosine)
NN_METRICS = ("csls", "cos")
RATES = ("coverage", "pair_coverage")  # fractions that `in_percent` turns into percent beside P@k


def aer(pred_links: Sequence[Iterable[Link]], gold) -> dict:
    """Corpus-level precision, recall, F1 and AER of `pred_links` against `gold` (an io.Alignments).

    `gold.sure[i]` and `gold.possible[i]` are sets of (src, tgt) links for sentence i; possible links
    are treated as a superset of the sure ones even if a file lists them separately.
    """
    sure_all, poss_all = gold.sure, gold.possible
    if len(pred_links) != len(sure_all):
        raise XlfastError(
            f"the prediction has {len(pred_links)} sentences but the gold has {len(sure_all)}; "
            "both must list one line per sentence pair"
        )
    n_pred = n_sure = hit_sure = hit_poss = 0
    for pred, sure, poss in zip(pred_links, sure_all, poss_all):
        pred = set(pred)
        poss = set(poss) | set(sure)
        n_pred += len(pred)
        n_sure += len(sure)
        hit_sure += len(pred & set(sure))
        hit_poss += len(pred & poss)
    precision = hit_poss / n_pred if n_pred else 0.0
    recall = hit_sure / n_sure if n_sure else 0.0
    denom = n_pred + n_sure
    error = 1.0 - (hit_sure + hit_poss) / denom if denom else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "aer": error,
        "n_pred": n_pred,
        "n_sure": n_sure,
        "n_possible_only": sum(len(set(p) - set(s)) for s, p in zip(sure_all, poss_all)),
        "n_sentences": len(sure_all),
    }


def _first_index(words: Sequence[str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, w in enumerate(words):
        index.setdefault(w, i)
    return index


def bli(
    src_words: Sequence[str],
    src_vecs: torch.Tensor,
    tgt_words: Sequence[str],
    tgt_vecs: torch.Tensor,
    dictionary: Iterable[tuple[str, str]],
    ks: Sequence[int] = (1, 5, 10),
    method: str = "csls",
    knn: int = 10,
    details: bool = False,
) -> dict:
    """P@k (fractions in [0,1]) of `dictionary` translations retrieved from the whole target vocabulary.

    Returns `{"p@1": .., "p@5": .., "p@10": .., "coverage", "pair_coverage", "n_eval", "n_missing",
    "n_dict_words", "method", "details"}`; `details` (when asked) lists per query word its gold
    translations, the top predictions and the 1-based rank of the first correct one (None if beyond
    max(ks)).
    """
    from xlfast.kernels import csls

    if method not in BLI_METHODS:
        raise UsageError(f"unknown BLI method {method!r}: use {' or '.join(BLI_METHODS)}")
    if len(src_words) != src_vecs.shape[0] or len(tgt_words) != tgt_vecs.shape[0]:
        raise XlfastError("word lists and vector matrices differ in length")
    ks = sorted(set(int(k) for k in ks))
    src_index, tgt_index = _first_index(src_words), _first_index(tgt_words)

    gold: dict[str, set[int]] = {}
    order: list[str] = []  # dictionary order of source words, for reproducible details
    n_pairs = n_pairs_found = 0
    dict_src_words: set[str] = set()
    for s, t in dictionary:
        n_pairs += 1
        if s not in dict_src_words:
            dict_src_words.add(s)
        if s in src_index and t in tgt_index:
            n_pairs_found += 1
            if s not in gold:
                gold[s] = set()
                order.append(s)
            gold[s].add(tgt_index[t])

    result = {f"p@{k}": 0.0 for k in ks}
    result.update(
        method=method,
        knn=knn if method == "csls" else None,
        n_dict_words=len(dict_src_words),
        n_eval=len(order),
        n_missing=len(dict_src_words) - len(order),
        coverage=len(order) / len(dict_src_words) if dict_src_words else 0.0,
        pair_coverage=n_pairs_found / n_pairs if n_pairs else 0.0,
        details=[] if details else None,
    )
    if not order:
        return result

    k_max = min(max(ks), len(tgt_words))
    query_rows = torch.tensor([src_index[w] for w in order], dtype=torch.long)
    if method == "csls":
        # CSLS needs r_S(y) over the whole source vocabulary; `rows` ranks only the queries.
        top = csls.topk(src_vecs, tgt_vecs, k_max, metric="csls", knn=knn, rows=query_rows)
        top_idx = top.indices
    else:
        top = csls.topk(src_vecs[query_rows], tgt_vecs, k_max, metric="cos")
        top_idx = top.indices
    top_idx = top_idx.cpu().tolist()

    hits = {k: 0 for k in ks}
    for w, row in zip(order, top_idx):
        rank = next((r + 1 for r, j in enumerate(row) if j in gold[w]), None)
        for k in ks:
            if rank is not None and rank <= k:
                hits[k] += 1
        if details:
            result["details"].append(
                {
                    "src": w,
                    "gold": sorted(tgt_words[j] for j in gold[w]),
                    "predicted": [tgt_words[j] for j in row],
                    "rank": rank,
                }
            )
    for k in ks:
        result[f"p@{k}"] = hits[k] / len(order)
    return result


def in_percent(result: dict) -> dict:
    """A `bli` result with P@k and coverage in percent, the unit the field reports (MUSE, vecmap)."""
    return {key: 100 * value if (key.startswith("p@") or key in RATES) and value is not None else value
            for key, value in result.items()}


# ----------------------------------------------------------------------------- what the commands run


def aer_files(gold, pred, corpus=None, corpus_tgt=None, gold_base: str | int = "auto") -> dict:
    """`aer` of a predicted Pharaoh file against a gold file ('-' for standard input in either). With the
    aligned `corpus` (one file or two), indices are checked against the sentence lengths and they help
    detect the gold's index convention. Adds what the reading found: `gold_base`, `gold_convention`
    and `n_possible_pred` (prediction links marked possible: all count as predicted)."""
    from xlfast.io import check_stdin_once, read_alignments, read_parallel

    check_stdin_once(gold, pred, corpus, corpus_tgt)
    src_lens = tgt_lens = None
    if corpus is not None:
        pairs = read_parallel(corpus, corpus_tgt)
        src_lens = [len(s.split()) for s in pairs.src]
        tgt_lens = [len(t.split()) for t in pairs.tgt]
    gold_links = read_alignments(gold, base=gold_base, src_lens=src_lens, tgt_lens=tgt_lens)
    predicted = read_alignments(pred, base=0, src_lens=src_lens, tgt_lens=tgt_lens)
    if len(predicted) != len(gold_links):
        raise InputError(pred, f"has {len(predicted)} lines but the gold {gold} has {len(gold_links)}; "
                               "one line per sentence pair is needed in both")
    result = aer(predicted.possible, gold_links)
    return dict(result, one_minus_aer=1 - result["aer"], gold_base=gold_links.base, gold_convention=gold_links.how,
                n_possible_pred=sum(len(p - s) for s, p in zip(predicted.sure, predicted.possible)))


def lexicon_induction(source, target_vec=None, *, dictionary, src_lang: str | None = None,
                      tgt_lang: str | None = None, knn: int = 10, details: bool = False) -> dict:
    """BLI of a run (`source` a run directory; languages its two unless given) or of two .vec files, with
    CSLS and with plain nearest neighbour: `{"label", "target_words", "csls": .., "nn": ..}`, each method's
    figures in percent (`in_percent`). A run's lowercased vocabulary gets a lowercased dictionary."""
    from pathlib import Path

    from xlfast.io import read_dictionary, read_vec

    source = Path(source)
    if source.is_dir():
        from xlfast.run import Run

        if target_vec is not None:
            raise UsageError("give either a run directory or two .vec files, not both")
        run = Run.load(source)
        src_lang, tgt_lang = run.language_pair(src_lang, tgt_lang)
        sw, sv = run.word_vectors(src_lang)
        tw, tv = run.word_vectors(tgt_lang)
        sv, tv, lowercase, label = sv.float(), tv.float(), run.tokenizer.lowercase, f"{src_lang}→{tgt_lang}"
    else:
        if target_vec is None:
            raise UsageError(f"{source} is not a run directory; give the source and the target .vec files")
        sw, src_array = read_vec(source)
        tw, tgt_array = read_vec(target_vec)
        if src_array.shape[1] != tgt_array.shape[1]:
            raise XlfastError(f"{source} has {src_array.shape[1]}-dimensional vectors but {target_vec} has "
                              f"{tgt_array.shape[1]}")
        sv, tv, lowercase = torch.from_numpy(src_array), torch.from_numpy(tgt_array), False
        label = f"{source.name}→{Path(target_vec).name}"
    pairs = read_dictionary(dictionary)
    if lowercase:  # the run's vocabulary is lowercased; so must the dictionary be
        pairs = list(dict.fromkeys((s.lower(), t.lower()) for s, t in pairs))
    return {"label": label, "target_words": len(tw),
            **{m: in_percent(bli(sw, sv, tw, tv, pairs, method=m, knn=knn, details=details)) for m in BLI_METHODS}}


def nearest_words(run, word: str, lang: str | None = None, to: str | None = None, k: int = 10,
                  metric: str = "csls", knn: int = 10) -> dict:
    """The `k` nearest words of `word` (language `lang`) in language `to` of a trained run, as BLI retrieves
    them: `{"word", "lang", "to", "metric", "in_vocabulary", "neighbours": [{"word", metric, "cos"}]}`.
    The word is tokenised as the run was; an unseen word is built from its subword pieces."""
    from xlfast.kernels import csls

    if metric not in NN_METRICS:
        raise UsageError(f"unknown metric {metric!r}: use {' or '.join(NN_METRICS)}")
    lang, to = run.language_pair(lang, to)
    src_words, src_vecs = run.word_vectors(lang)
    tgt_words, tgt_vecs = run.word_vectors(to)
    query = run.tokenizer(word)
    query = query[0] if len(query) == 1 else (word.lower() if run.tokenizer.lowercase else word)
    in_vocab = query in src_words
    qvec = run.embed_words(lang, [query]).float()
    if metric == "csls":
        # CSLS needs the source neighbourhood of every target word: the query joins the source vocabulary.
        if in_vocab:
            X, row = src_vecs.float(), src_words.index(query)
        else:
            X, row = torch.cat([src_vecs.float(), qvec]), src_vecs.shape[0]
        top = csls.topk(X, tgt_vecs.float(), k, metric="csls", knn=knn)
        scores, indices = top.scores[row], top.indices[row]
    else:
        top = csls.topk(qvec, tgt_vecs.float(), k, metric="cos")
        scores, indices = top.scores[0], top.indices[0]
    cos = (csls.normalize(qvec) @ csls.normalize(tgt_vecs.float()[indices]).T)[0]
    return {"word": query, "lang": lang, "to": to, "metric": metric, "in_vocabulary": in_vocab,
            "neighbours": [{"word": tgt_words[int(j)], metric: float(s), "cos": float(c)}
                           for j, s, c in zip(indices, scores, cos)]}
