"""`xlfast nn`: nearest neighbours of a word in another language."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from xlfast.cli.common import ThreadsOption, apply_threads, console, table, write_json


def nn(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    word: Annotated[str, typer.Argument(help="The word to look up (unseen words go through their subwords).")],
    lang: Annotated[str, typer.Option("--lang", "-l", help="Language of WORD.")] = ...,
    to: Annotated[Optional[str], typer.Option(help="Language to search; default: the run's other language.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many neighbours.", min=1)] = 10,
    metric: Annotated[str, typer.Option(help="csls (hubness-corrected, K=10) or cos.")] = "csls",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the neighbours as JSON.")] = None,
    threads: ThreadsOption = None,
) -> None:
    """Show the nearest words of WORD in another language."""
    apply_threads(threads)
    import torch

    from xlfast.cli.align_cmd import resolve_langs
    from xlfast.errors import XlfastError
    from xlfast.kernels import csls
    from xlfast.run import Run

    if metric not in ("csls", "cos"):
        raise XlfastError(f"unknown metric {metric!r}: use csls or cos")
    run = Run.load(run_dir)
    lang, to = resolve_langs(run, lang, to)
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
        top = csls.topk(X, tgt_vecs.float(), k, metric="csls", knn=10)
        scores, indices = top.scores[row], top.indices[row]
    else:
        top = csls.topk(qvec, tgt_vecs.float(), k, metric="cos")
        scores, indices = top.scores[0], top.indices[0]
    cos = (csls.normalize(qvec) @ csls.normalize(tgt_vecs.float()[indices]).T)[0]
    rows = [[r + 1, tgt_words[int(j)], float(s), float(c)] for r, (j, s, c) in enumerate(zip(indices, scores, cos))]
    note = "" if in_vocab else " (not in the vocabulary: built from its subword pieces)"
    console.print(table(f"{query} ({lang}) → {to}{note}", ["rank", "word", metric, "cos"], rows))
    if json_out is not None:
        write_json(json_out, {"word": query, "lang": lang, "to": to, "metric": metric, "in_vocabulary": in_vocab,
                              "neighbours": [{"word": w, metric: s, "cos": c} for _, w, s, c in rows]})
