"""`xlfast eval aer|bli`: score alignments and bilingual lexicons."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from xlfast.cli.common import ThreadsOption, XlfastGroup, apply_threads, console, table, write_json
from xlfast.errors import InputError, XlfastError

app = typer.Typer(cls=XlfastGroup, no_args_is_help=True, rich_markup_mode="rich")


class Base(str, Enum):
    auto = "auto"
    zero = "0"
    one = "1"


@app.command("aer")
def aer(
    gold: Annotated[Path, typer.Option(help="Gold links: `i-j` sure, `ipj` / `i-jp` / `i?j` possible.")],
    pred: Annotated[Path, typer.Option(help="Predicted Pharaoh links (0-based), one line per pair.")],
    gold_base: Annotated[Base, typer.Option(help="Index convention of the gold file; auto detects it.")] = Base.auto,
    src_tgt: Annotated[Optional[Path], typer.Option(help="The aligned parallel text (`src ||| tgt` or TSV): checks "
                                                         "indices against sentence lengths and helps detect "
                                                         "the gold's convention.")] = None,
    tgt_file: Annotated[Optional[Path], typer.Option(help="Target side when --src-tgt holds only the source.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures as JSON ('-' = stdout).")] = None,
) -> None:
    """Precision, recall and AER of predicted alignments against gold sure/possible links."""
    from xlfast import evaluate
    from xlfast.io import read_alignments, read_parallel

    src_lens = tgt_lens = None
    if src_tgt is not None:
        corpus = read_parallel(src_tgt, tgt_file)
        src_lens = [len(s.split()) for s in corpus.src]
        tgt_lens = [len(t.split()) for t in corpus.tgt]
    base = gold_base.value if gold_base is Base.auto else int(gold_base.value)
    gold_links = read_alignments(gold, base=base, src_lens=src_lens, tgt_lens=tgt_lens)
    predicted = read_alignments(pred, base=0, src_lens=src_lens, tgt_lens=tgt_lens)
    if len(predicted) != len(gold_links):
        raise InputError(pred, f"has {len(predicted)} lines but the gold {gold} has {len(gold_links)}; "
                               "one line per sentence pair is needed in both")
    n_possible_pred = sum(len(p - s) for s, p in zip(predicted.sure, predicted.possible))
    result = evaluate.aer(predicted.possible, gold_links)
    result.update(one_minus_aer=1 - result["aer"], gold_base=gold_links.base, gold_convention=gold_links.how,
                  gold=str(gold), pred=str(pred))
    rows = [
        ["precision", result["precision"]], ["recall", result["recall"]], ["F1", result["f1"]],
        ["AER", result["aer"]], ["1 − AER", result["one_minus_aer"]],
        ["predicted links", result["n_pred"]], ["sure gold links", result["n_sure"]],
        ["possible-only gold links", result["n_possible_only"]], ["sentence pairs", result["n_sentences"]],
    ]
    console.print(table(f"AER of {pred.name}", ["measure", "value"], rows))
    console.print(f"gold read as {gold_links.how}", highlight=False)
    if n_possible_pred:
        console.print(f"note: {n_possible_pred} prediction links were marked possible; all count as predicted")
    if json_out is not None:
        write_json(json_out, result)


def _load_vectors(source: Path, tgt_vec: Optional[Path], src_lang, tgt_lang):
    """(src words, src vecs, tgt words, tgt vecs, lowercase?, label) from a run or two .vec files."""
    import torch

    if source.is_dir():
        from xlfast.cli.align_cmd import resolve_langs
        from xlfast.run import Run

        if tgt_vec is not None:
            raise XlfastError("give either a run directory or two .vec files, not both")
        run = Run.load(source)
        src_lang, tgt_lang = resolve_langs(run, src_lang, tgt_lang)
        sw, sv = run.word_vectors(src_lang)
        tw, tv = run.word_vectors(tgt_lang)
        return sw, sv.float(), tw, tv.float(), run.tokenizer.lowercase, f"{src_lang}→{tgt_lang}"
    if tgt_vec is None:
        raise XlfastError(f"{source} is not a run directory; give the source and the target .vec files")
    from xlfast.io import read_vec

    sw, sv = read_vec(source)
    tw, tv = read_vec(tgt_vec)
    if sv.shape[1] != tv.shape[1]:
        raise XlfastError(f"{source} has {sv.shape[1]}-dimensional vectors but {tgt_vec} has {tv.shape[1]}")
    return sw, torch.from_numpy(sv), tw, torch.from_numpy(tv), False, f"{source.name}→{tgt_vec.name}"


@app.command("bli")
def bli(
    source: Annotated[Path, typer.Argument(help="A run directory, or the source-language .vec file.")],
    tgt_vec: Annotated[Optional[Path], typer.Argument(help="The target-language .vec file (with a .vec source).")] = None,
    dictionary: Annotated[Path, typer.Option("--dict", help="Gold dictionary: `src tgt` (or TAB) per line; "
                                                             "several lines per word allowed.")] = ...,
    src_lang: Annotated[Optional[str], typer.Option(help="Source language of a run; default: its first.")] = None,
    tgt_lang: Annotated[Optional[str], typer.Option(help="Target language of a run; default: its other.")] = None,
    knn: Annotated[int, typer.Option(help="CSLS neighbourhood size K.", min=1)] = 10,
    details: Annotated[bool, typer.Option(help="Print each word's top predictions and rank.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures as JSON ('-' = stdout).")] = None,
    threads: ThreadsOption = None,
) -> None:
    """Bilingual lexicon induction: P@1/P@5/P@10 with CSLS and nearest neighbour, over the whole target vocabulary."""
    apply_threads(threads)
    from xlfast import evaluate
    from xlfast.io import read_dictionary

    sw, sv, tw, tv, lowercase, label = _load_vectors(source, tgt_vec, src_lang, tgt_lang)
    pairs = read_dictionary(dictionary)
    if lowercase:  # the run's vocabulary is lowercased; so must the dictionary be
        pairs = list(dict.fromkeys((s.lower(), t.lower()) for s, t in pairs))
    results = {m: evaluate.bli(sw, sv, tw, tv, pairs, method=m, knn=knn, details=details) for m in ("csls", "nn")}
    rows = [[f"CSLS (K={knn})" if m == "csls" else "nearest neighbour", *(100 * r[f"p@{k}"] for k in (1, 5, 10))]
            for m, r in results.items()]
    console.print(table(f"BLI {label} on {dictionary.name} (%)", ["retrieval", "P@1", "P@5", "P@10"], rows))
    r = results["csls"]
    console.print(
        f"coverage: {r['n_eval']} of {r['n_dict_words']} dictionary words evaluated ({100 * r['coverage']:.1f}%), "
        f"{r['n_missing']} missing from the vocabularies; {100 * r['pair_coverage']:.1f}% of pairs found; "
        f"target vocabulary {len(tw)} words",
        highlight=False,
    )
    if r["n_eval"] == 0:
        console.print("[yellow]no dictionary word is in both vocabularies: check languages and lowercasing[/]")
    if details:
        detail_rows = []
        by_word = {d["src"]: d for d in results["nn"]["details"]}
        for d in r["details"]:
            detail_rows.append([d["src"], ", ".join(d["gold"]), ", ".join(d["predicted"][:5]),
                                d["rank"] or "-", by_word[d["src"]]["rank"] or "-"])
        console.print(table("per word (CSLS top 5)", ["word", "gold", "CSLS top 5", "rank CSLS", "rank NN"],
                            detail_rows))
    if json_out is not None:
        write_json(json_out, {"source": str(source), "target": str(tgt_vec) if tgt_vec else None,
                              "dictionary": str(dictionary), **results})
