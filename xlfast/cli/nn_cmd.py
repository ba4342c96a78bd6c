"""`xlfast nn`: nearest neighbours of a word in another language."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from xlfast.cli.common import JsonOption, ThreadsOption, apply_threads, choices, console, nonblank, table, write_json
from xlfast.evaluate import NN_METRICS

Metric = choices("Metric", NN_METRICS)


def nn(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    word: Annotated[str, typer.Argument(callback=nonblank, help="The word to look up (unseen words go through their "
                                                                "subwords).")],
    lang: Annotated[str, typer.Option("--lang", "-l", help="Language of WORD.")] = ...,
    to: Annotated[Optional[str], typer.Option(help="Language to search. Default: the run's other language.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many neighbours.", min=1)] = 10,
    metric: Annotated[Metric, typer.Option(help="csls (hubness-corrected, K=10) or cos.")] = Metric.csls,
    json_out: JsonOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Show the nearest words of WORD in another language."""
    apply_threads(threads)
    from xlfast.evaluate import nearest_words
    from xlfast.run import Run

    found = nearest_words(Run.load(run_dir), word, lang, to, k, metric.value)
    note = "" if found["in_vocabulary"] else " (not in the vocabulary: built from its subword pieces)"
    rows = [[rank, n["word"], n[found["metric"]], n["cos"]] for rank, n in enumerate(found["neighbours"], start=1)]
    console.print(table(f"{found['word']} ({found['lang']}) → {found['to']}{note}",
                        ["rank", "word", found["metric"], "cos"], rows))
    if json_out is not None:
        write_json(json_out, found)
