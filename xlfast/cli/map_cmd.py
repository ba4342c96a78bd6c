"""`xlfast map`: align two embedding spaces by orthogonal Procrustes with CSLS refinement, or refine
the jointly trained spaces of an xlfast run (the combined framework of Wang et al. 2020)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

from xlfast import mapping
from xlfast.cli.common import (JsonOption, ThreadsOption, apply_threads, choices, console, err_console, parsed_by,
                               progress, table, write_json)

Select = choices("Select", mapping.SELECTIONS)


def map_(
    source: Annotated[Path, typer.Argument(help="Source embeddings (word2vec .vec, .vec.gz), or an xlfast run "
                                                "directory.")],
    target: Annotated[Optional[Path], typer.Argument(help="Target embeddings (.vec); omitted for a run directory.")] = None,
    out_dir: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Output directory. Default: RUN_DIR/mapped for a run.")
    ] = None,
    seed_dict: Annotated[
        Optional[Path], typer.Option("--dict", help="Seed dictionary, 'src tgt' per line.")
    ] = None,
    identical: Annotated[
        bool, typer.Option("--identical", help="Seed with identically spelled words.")
    ] = False,
    normalize: Annotated[
        str, typer.Option("--normalize", callback=parsed_by(mapping.parse_normalization),
                          help="Steps applied to both spaces in order: unit, center, none.")
    ] = "unit,center,unit",
    iterations: Annotated[
        int, typer.Option("--iterations", min=0, help="CSLS refinement iterations after the seed.")
    ] = 5,
    max_vocab: Annotated[
        int, typer.Option("--max-vocab", min=1, help="Most frequent words per side used to induce dictionaries.")
    ] = 20000,
    knn: Annotated[int, typer.Option("--knn", min=1, help="CSLS neighbourhood size K.")] = 10,
    select: Annotated[
        Select, typer.Option("--select", help="Keep the 'best' step by the unsupervised criterion, or the 'last'.")
    ] = Select.best,
    keep_seed: Annotated[
        bool, typer.Option("--keep-seed", help="Refine on the seed plus the induced pairs, not the induced pairs alone.")
    ] = False,
    max_words: Annotated[
        Optional[int], typer.Option("--max-words", min=1, help="Read only the first N words of each .vec. Default: all.")
    ] = None,
    eval_dict: Annotated[
        Optional[Path], typer.Option("--eval-dict", help="Gold dictionary: report BLI (CSLS, P@1/5/10 %) after every step.")
    ] = None,
    langs: Annotated[
        Optional[str], typer.Option("--langs", callback=parsed_by(mapping.parse_langs),
                                    help="Run directory only: source,target languages. Default: the run's two.")
    ] = None,
    json_path: JsonOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Map SRC onto TGT: orthogonal Procrustes from a seed, refined on CSLS mutual nearest neighbours.

    With a run directory, refine the run's jointly trained spaces starting from the identity map.
    Writes the mapped source and normalised target as .vec files, W.npy and map.json.
    """
    apply_threads(threads)
    with progress(TextColumn("[bold]map[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                  TimeElapsedColumn()) as bar:
        task = bar.add_task("map", total=iterations + 1)
        report = mapping.map_spaces(
            source, target, out_dir, langs=langs, seed_dict=seed_dict, identical=identical, normalize=normalize,
            iterations=iterations, max_vocab=max_vocab, knn=knn, select=select.value, keep_seed=keep_seed,
            max_words=max_words, eval_dict=eval_dict, on_step=lambda _step: bar.advance(task),
        )
    if json_path is not None:
        write_json(json_path, report.summary)

    seed, result, paths = report.seed, report.result, report.paths
    if seed.source != "identity":
        covered = f", {seed.covered}/{seed.requested} of the dictionary in the vocabularies" if seed_dict else ""
        err_console.print(f"seed: {seed.covered:,} pairs ({seed.source}{covered})", highlight=False, markup=False)
    evaluated = eval_dict is not None
    columns = ["step", "pairs", "criterion", "mutual"] + (["P@1 %", "P@5 %", "P@10 %", "cover %"] if evaluated else [])
    rows = []
    for i, s in enumerate(result.history):
        row = [s.step + (" *" if i == result.selected else ""), s.dictionary_size, f"{s.criterion:.3f}", s.induced_size]
        if s.evaluation is not None:
            row += [f"{s.evaluation[key]:.1f}" for key in ("p@1", "p@5", "p@10", "coverage")]
        rows.append(row)
    console.print(table(f"map {Path(report.summary['source']).name} → {Path(report.summary['target']).name}  "
                        "(* kept; criterion: mean cos to CSLS-nearest)", columns, rows))
    console.print(f"wrote {paths['source']}, {paths['target']}, {paths['W']} and {paths['summary']}",
                  highlight=False, markup=False)
    if evaluated:
        p1 = [s.evaluation["p@1"] for s in result.history]
        best = max(range(len(p1)), key=p1.__getitem__)
        if p1[best] > p1[result.selected] + 1e-9:
            # the self-learning criterion can rise while the dictionary fills with noise (small corpora)
            err_console.print(
                f"[yellow]note:[/] the unsupervised criterion kept '{result.history[result.selected].step}', but P@1 "
                f"on {eval_dict.name} was best at '{result.history[best].step}'; refinement may be fitting noise "
                "(try --iterations 0 or --keep-seed)",
                highlight=False,
            )
