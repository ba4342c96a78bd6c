"""`xlfast map`: align two embedding spaces by orthogonal Procrustes with CSLS refinement, or refine
the jointly trained spaces of an xlfast run (the combined framework of Wang et al. 2020)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import torch
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from xlfast.cli.common import ThreadsOption, apply_threads, console, err_console, table, write_json
from xlfast.errors import InputError, XlfastError
from xlfast import mapping
from xlfast.rundir import RunDir


def _run_languages(run_dir: Path, langs: Optional[str]) -> list[str]:
    """The run's two languages: --langs, else the run directory's own (RunDir.langs)."""
    if langs:
        chosen = [x.strip() for x in langs.split(",") if x.strip()]
        if len(chosen) != 2:
            raise XlfastError(f"--langs needs exactly two languages (source,target), got '{langs}'")
        return chosen
    found = RunDir(run_dir).langs()
    if not found:
        raise XlfastError(f"{run_dir}: not an xlfast run directory (no config.json and no emb.<lang>.vec files)")
    if len(found) != 2:
        raise XlfastError(f"{run_dir}: pick two languages with --langs src,tgt (the run has: {', '.join(found)})")
    return found


def _input_pair(
    source: Path, target: Optional[Path], langs: Optional[str], out_dir: Optional[Path]
) -> tuple[Path, Path, Path, str, str, bool]:
    """(src .vec, tgt .vec, output dir, src output name, tgt output name, run mode)."""
    if not source.exists():
        raise XlfastError(f"{source}: no such file or directory")
    if source.is_dir():
        if target is not None:
            raise XlfastError(f"give either a run directory or two .vec files, not '{source}' and '{target}'")
        src_lang, tgt_lang = _run_languages(source, langs)
        src_path, tgt_path = RunDir(source).vec_path(src_lang), RunDir(source).vec_path(tgt_lang)
        for p, lang in ((src_path, src_lang), (tgt_path, tgt_lang)):
            if not p.is_file():
                raise XlfastError(f"{source}: the run has no embeddings for '{lang}' ({p.name} is missing)")
        return src_path, tgt_path, out_dir or source / "mapped", src_path.name, tgt_path.name, True
    if target is None:
        raise XlfastError("give the target embeddings too: xlfast map SRC.vec TGT.vec -o OUT_DIR")
    if not target.is_file():
        raise XlfastError(f"{target}: no such file")
    if langs:
        raise XlfastError("--langs only applies to a run directory")
    if out_dir is None:
        raise XlfastError("give an output directory with -o OUT_DIR")
    src_name, tgt_name = source.name, target.name
    if src_name == tgt_name:  # e.g. a/emb.vec and b/emb.vec
        src_name, tgt_name = f"src.{src_name}", f"tgt.{tgt_name}"
    return source, target, out_dir, src_name, tgt_name, False


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def map_(
    source: Annotated[Path, typer.Argument(help="Source embeddings (word2vec .vec), or an xlfast run directory.")],
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
        str, typer.Option("--normalize", help="Steps applied to both spaces in order: unit, center, none.")
    ] = "unit,center,unit",
    iterations: Annotated[
        int, typer.Option("--iterations", min=0, help="CSLS refinement iterations after the seed.")
    ] = 5,
    max_vocab: Annotated[
        int, typer.Option("--max-vocab", min=1, help="Most frequent words per side used to induce dictionaries.")
    ] = 20000,
    knn: Annotated[int, typer.Option("--knn", min=1, help="CSLS neighbourhood size K.")] = 10,
    select: Annotated[
        str, typer.Option("--select", help="Keep the 'best' step by the unsupervised criterion, or the 'last'.")
    ] = "best",
    keep_seed: Annotated[
        bool, typer.Option("--keep-seed", help="Refine on the seed plus the induced pairs, not the induced pairs alone.")
    ] = False,
    max_words: Annotated[
        Optional[int], typer.Option("--max-words", min=1, help="Read only the first N words of each .vec. Default: all.")
    ] = None,
    eval_dict: Annotated[
        Optional[Path], typer.Option("--eval-dict", help="Gold dictionary: report BLI (CSLS, P@1/5/10) after every step.")
    ] = None,
    langs: Annotated[
        Optional[str], typer.Option("--langs", help="Run directory only: source,target languages. Default: the run's two.")
    ] = None,
    json_path: Annotated[
        Optional[Path], typer.Option("--json", help="Also write the summary JSON here ('-' for stdout).")
    ] = None,
    threads: ThreadsOption = None,
) -> None:
    """Map SRC onto TGT: orthogonal Procrustes from a seed, refined on CSLS mutual nearest neighbours.

    With a run directory, refine the run's jointly trained spaces starting from the identity map.
    Writes the mapped source and normalised target as .vec files, W.npy and map.json.
    """
    apply_threads(threads)
    from xlfast import io

    started = time.perf_counter()
    src_path, tgt_path, out_dir, src_name, tgt_name, run_mode = _input_pair(source, target, langs, out_dir)
    steps = mapping.parse_normalization(normalize)
    if seed_dict is not None and identical:
        raise XlfastError("choose one seed: --dict SEED or --identical")
    if seed_dict is None and not identical and not run_mode:
        raise XlfastError("two independent spaces need a seed: --dict SEED or --identical")
    for p in (seed_dict, eval_dict):
        if p is not None and not p.is_file():
            raise XlfastError(f"{p}: no such file")

    src_words, src_vecs = io.read_vec(src_path, max_words=max_words)
    tgt_words, tgt_vecs = io.read_vec(tgt_path, max_words=max_words)
    for p, words in ((src_path, src_words), (tgt_path, tgt_words)):
        if len(words) == 0:
            raise InputError(p, "no word vectors in the file")
    if src_vecs.shape[1] != tgt_vecs.shape[1]:
        raise InputError(
            tgt_path, f"has {tgt_vecs.shape[1]} dimensions but {src_path.name} has {src_vecs.shape[1]}; "
            "orthogonal mapping needs one dimension"
        )
    src_vecs = mapping.apply_normalization(src_vecs, steps)
    tgt_vecs = mapping.apply_normalization(tgt_vecs, steps)

    if seed_dict is not None:
        seed = mapping.seed_from_dictionary(src_words, tgt_words, io.read_dictionary(seed_dict))
    elif identical:
        seed = mapping.seed_from_identical(src_words, tgt_words)
    else:
        seed = mapping.identity_start()
    if seed.source != "identity":
        err_console.print(
            f"seed: {seed.covered:,} pairs ({seed.source}"
            + (f", {seed.covered}/{seed.requested} of the dictionary in the vocabularies" if seed_dict else "")
            + ")",
            highlight=False,
        )
        if 0 < len(seed) < src_vecs.shape[1]:
            err_console.print(
                f"[yellow]warning:[/] {len(seed)} seed pairs for {src_vecs.shape[1]} dimensions: "
                "the first map is underdetermined; refinement has to do the work",
                highlight=False,
            )

    evaluate = None
    gold = None
    if eval_dict is not None:
        from xlfast.evaluate import bli

        gold = io.read_dictionary(eval_dict)

        def evaluate(mapped: np.ndarray) -> dict:
            return bli(src_words, torch.from_numpy(mapped), tgt_words, torch.from_numpy(tgt_vecs), gold,
                       ks=(1, 5, 10), method="csls", knn=knn)

    with Progress(
        TextColumn("[bold]map[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(), console=err_console, transient=True,
    ) as progress:
        task = progress.add_task("map", total=iterations + 1)
        result = mapping.map_embeddings(
            src_vecs, tgt_vecs, seed, iterations=iterations, max_vocab=max_vocab, knn=knn, select=select,
            keep_seed=keep_seed, evaluate=evaluate, on_step=lambda _step: progress.advance(task),
        )

    mapped_src = result.apply(src_vecs)
    out_dir.mkdir(parents=True, exist_ok=True)
    src_out, tgt_out = out_dir / src_name, out_dir / tgt_name
    io.write_vec(src_out, src_words, mapped_src)
    io.write_vec(tgt_out, tgt_words, tgt_vecs)
    w_path = out_dir / "W.npy"
    with io.atomic_open(w_path, "wb") as fh:
        np.save(fh, result.W)

    summary = {
        "mode": "run" if run_mode else "files",
        "source": os.fspath(src_path),
        "target": os.fspath(tgt_path),
        "source_words": len(src_words),
        "target_words": len(tgt_words),
        "dim": int(src_vecs.shape[1]),
        "normalize": list(steps),
        "seed": {"kind": seed.source, "pairs": len(seed), "requested": seed.requested, "covered": seed.covered,
                 "path": os.fspath(seed_dict) if seed_dict else None},
        "iterations": iterations,
        "max_vocab": max_vocab,
        "knn": knn,
        "select": select,
        "keep_seed": keep_seed,
        "selected_step": result.history[result.selected].step,
        "converged": result.converged,
        "history": [s.as_dict() for s in result.history],
        "eval_dict": os.fspath(eval_dict) if eval_dict else None,
        "outputs": {"source": os.fspath(src_out), "target": os.fspath(tgt_out), "W": os.fspath(w_path)},
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(out_dir / "map.json", summary)
    if json_path is not None:
        write_json(json_path, summary)

    columns = ["step", "pairs", "criterion", "mutual"]
    if gold is not None:
        columns += ["P@1 %", "P@5 %", "P@10 %", "cover %"]
    rows = []
    for i, s in enumerate(result.history):
        row = [s.step + (" *" if i == result.selected else ""), s.dictionary_size, f"{s.criterion:.3f}", s.induced_size]
        if s.evaluation is not None:
            e = s.evaluation
            row += [_percent(e.get("p@1")), _percent(e.get("p@5")), _percent(e.get("p@10")), _percent(e.get("coverage"))]
        rows.append(row)
    title = f"map {src_path.name} → {tgt_path.name}  (* kept; criterion: mean cos to CSLS-nearest)"
    if json_path is None or str(json_path) != "-":
        console.print(table(title, columns, rows))
        console.print(f"wrote {src_out}, {tgt_out}, {w_path} and {out_dir / 'map.json'}", highlight=False)
    if gold is not None:
        best_p1 = max(range(len(result.history)), key=lambda i: (result.history[i].evaluation or {}).get("p@1") or 0.0)
        kept_p1 = (result.history[result.selected].evaluation or {}).get("p@1") or 0.0
        if (result.history[best_p1].evaluation or {}).get("p@1", 0.0) > kept_p1 + 1e-9:
            # the self-learning criterion can rise while the dictionary fills with noise (small corpora)
            err_console.print(
                f"[yellow]note:[/] the unsupervised criterion kept '{result.history[result.selected].step}', but P@1 "
                f"on {eval_dict.name} was best at '{result.history[best_p1].step}'; refinement may be fitting noise "
                "(try --iterations 0 or --keep-seed)",
                highlight=False,
            )
