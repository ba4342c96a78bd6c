"""`xlfast eval aer|bli`: score alignments and bilingual lexicons."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from xlfast.cli.common import (JsonOption, SrcLangOption, TgtLangOption, ThreadsOption, XlfastCommand, XlfastGroup,
                               apply_threads, choices, console, table, write_json)
from xlfast.io import ALIGNMENT_BASES, is_stdio

app = typer.Typer(cls=XlfastGroup, no_args_is_help=True, rich_markup_mode="rich")
Base = choices("Base", ALIGNMENT_BASES)


@app.command("aer", cls=XlfastCommand)
def aer(
    gold: Annotated[Path, typer.Option(help="Gold links: `i-j` sure, `ipj` / `i-jp` / `i?j` possible; "
                                            "'-': standard input.")],
    pred: Annotated[Path, typer.Option(help="Predicted Pharaoh links (0-based), one line per pair; "
                                            "'-': standard input.")],
    gold_base: Annotated[Base, typer.Option(help="Index convention of the gold file; auto detects it.")] = Base.auto,
    src_tgt: Annotated[Optional[Path], typer.Option(help="The aligned parallel text (`src ||| tgt` or TSV): checks "
                                                         "indices against sentence lengths and helps detect "
                                                         "the gold's convention.")] = None,
    tgt_file: Annotated[Optional[Path], typer.Option(help="Target side when --src-tgt holds only the source.")] = None,
    json_out: JsonOption = None,
) -> None:
    """Precision, recall and AER of predicted alignments against gold sure/possible links."""
    from xlfast.evaluate import aer_files

    base = gold_base.value if gold_base is Base.auto else int(gold_base.value)
    result = aer_files(gold, pred, src_tgt, tgt_file, base)
    rows = [
        ["precision", result["precision"]], ["recall", result["recall"]], ["F1", result["f1"]],
        ["AER", result["aer"]], ["1 − AER", result["one_minus_aer"]],
        ["predicted links", result["n_pred"]], ["sure gold links", result["n_sure"]],
        ["possible-only gold links", result["n_possible_only"]], ["sentence pairs", result["n_sentences"]],
    ]
    console.print(table(f"AER of {'standard input' if is_stdio(pred) else pred.name}", ["measure", "value"], rows))
    console.print(f"gold read as {result['gold_convention']}", highlight=False, markup=False)
    if result["n_possible_pred"]:
        console.print(f"note: {result['n_possible_pred']} prediction links were marked possible; all count as predicted")
    if json_out is not None:
        write_json(json_out, dict(result, gold=str(gold), pred=str(pred)))


@app.command("bli", cls=XlfastCommand)
def bli(
    source: Annotated[Path, typer.Argument(help="A run directory, or the source-language .vec file (.vec.gz too).")],
    tgt_vec: Annotated[Optional[Path], typer.Argument(help="The target-language .vec file (with a .vec source).")] = None,
    dictionary: Annotated[Path, typer.Option("--dict", help="Gold dictionary: `src tgt` (or TAB) per line; "
                                                             "several lines per word allowed.")] = ...,
    src_lang: SrcLangOption = None,
    tgt_lang: TgtLangOption = None,
    knn: Annotated[int, typer.Option(help="CSLS neighbourhood size K.", min=1)] = 10,
    details: Annotated[bool, typer.Option(help="Print each word's top predictions and rank.")] = False,
    json_out: JsonOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Bilingual lexicon induction: P@1/P@5/P@10 (%) with CSLS and nearest neighbour, over the whole target
    vocabulary, with coverage."""
    apply_threads(threads)
    from xlfast.evaluate import lexicon_induction

    results = lexicon_induction(source, tgt_vec, dictionary=dictionary, src_lang=src_lang, tgt_lang=tgt_lang,
                                knn=knn, details=details)
    rows = [[f"CSLS (K={knn})" if m == "csls" else "nearest neighbour", *(results[m][f"p@{k}"] for k in (1, 5, 10))]
            for m in ("csls", "nn")]
    console.print(table(f"BLI {results['label']} on {dictionary.name} (%)", ["retrieval", "P@1", "P@5", "P@10"], rows))
    r = results["csls"]
    console.print(
        f"coverage: {r['n_eval']} of {r['n_dict_words']} dictionary words evaluated ({r['coverage']:.1f}%), "
        f"{r['n_missing']} missing from the vocabularies; {r['pair_coverage']:.1f}% of pairs found; "
        f"target vocabulary {results['target_words']} words",
        highlight=False, markup=False,
    )
    if r["n_eval"] == 0:
        console.print("[yellow]no dictionary word is in both vocabularies: check languages and lowercasing[/]")
    if details:
        by_word = {d["src"]: d for d in results["nn"]["details"]}
        detail_rows = [[d["src"], ", ".join(d["gold"]), ", ".join(d["predicted"][:5]), d["rank"] or "-",
                        by_word[d["src"]]["rank"] or "-"] for d in r["details"]]
        console.print(table("per word (CSLS top 5)", ["word", "gold", "CSLS top 5", "rank CSLS", "rank NN"],
                            detail_rows))
    if json_out is not None:
        write_json(json_out, {"source": str(source), "target": str(tgt_vec) if tgt_vec else None,
                              "dictionary": str(dictionary), "csls": results["csls"], "nn": results["nn"]})
