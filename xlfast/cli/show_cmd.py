"""`xlfast show`: the similarity matrix of one sentence pair as a picture, with the chosen links marked."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from xlfast.cli.align_cmd import Emb, Null, Sym, Tokenize, resolve_langs, resolve_tokenizer
from xlfast.cli.common import ThreadsOption, apply_threads, console, table


def show(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    src: Annotated[str, typer.Option("--src", help="The source sentence.")] = ...,
    tgt: Annotated[str, typer.Option("--tgt", help="The target sentence.")] = ...,
    output: Annotated[Path, typer.Option("--output", "-o", help="Picture to write (.png, .pdf or .svg).")] = ...,
    emb: Annotated[Emb, typer.Option(help="mix (as `xlfast align`), contextual or static vectors.")] = Emb.mix,
    sym: Annotated[Sym, typer.Option(help="Symmetrisation of the marked links.")] = Sym.gdfa,
    null: Annotated[Null, typer.Option(help="NULL heuristic for the marked links.")] = Null.none,
    score: Annotated[str, typer.Option(help="Colour by `csls` (what alignment uses) or `cos`.")] = "csls",
    src_lang: Annotated[Optional[str], typer.Option(help="Source language; default: the run's first.")] = None,
    tgt_lang: Annotated[Optional[str], typer.Option(help="Target language; default: the run's other.")] = None,
    tokenize: Annotated[Optional[Tokenize], typer.Option(help="Override the run's tokenizer.")] = None,
    lowercase: Annotated[Optional[bool], typer.Option("--lowercase/--no-lowercase",
                                                      help="Override the run's lowercasing.")] = None,
    threads: ThreadsOption = None,
) -> None:
    """Draw the similarity matrix of one sentence pair with the chosen links marked."""
    apply_threads(threads)
    from xlfast.align import align_lines, pair_scores, pair_vectors
    from xlfast.errors import XlfastError
    from xlfast.run import Run

    if score not in ("csls", "cos"):
        raise XlfastError(f"unknown score {score!r}: use csls or cos")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise XlfastError("xlfast show needs matplotlib: pip install matplotlib") from None
    run = Run.load(run_dir)
    src_lang, tgt_lang = resolve_langs(run, src_lang, tgt_lang)
    tok = resolve_tokenizer(run, tokenize, lowercase)
    [result], [(src_seg, tgt_seg)] = align_lines(run, [src], [tgt], src_lang, tgt_lang, tok, emb=emb.value,
                                                 sym=sym.value, null=null.value)
    if not src_seg.tokens or not tgt_seg.tokens:
        raise XlfastError("both --src and --tgt need at least one word")
    v = pair_vectors(run, [src_seg.tokens], [tgt_seg.tokens], src_lang, tgt_lang, emb.value)
    cos, csls, _, _ = pair_scores(v.src, v.tgt)
    # The picture shows the user's words: a word pair's cell is the best of its tokens' cells.
    matrix = _pool_to_words((csls if score == "csls" else cos)[0], src_seg, tgt_seg).numpy()
    src_tokens, tgt_tokens = src_seg.words, tgt_seg.words

    n, m = len(src_tokens), len(tgt_tokens)
    fig, ax = plt.subplots(figsize=(max(4.5, 2.5 + 0.5 * m), max(3.5, 1.5 + 0.5 * n)), dpi=120)
    image = ax.imshow(matrix, cmap="viridis", aspect="equal")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=score)
    ax.set_xticks(range(m), tgt_tokens, rotation=60, ha="right")
    ax.set_yticks(range(n), src_tokens)
    ax.set_xlabel(tgt_lang)
    ax.set_ylabel(src_lang)
    for i, j in result.links:  # chosen links: red squares; one-directional candidates: small dots
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    for i, j in (result.forward | result.backward) - set(result.links):
        ax.plot(j, i, marker=".", color="white", markersize=6)
    ax.set_title(f"{emb.value} {score}, {sym.value}, null={null.value}", fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(output)
    except (OSError, ValueError) as exc:
        raise XlfastError(f"{output}: cannot write the picture ({exc})") from None
    finally:
        plt.close(fig)
    rows = [[f"{i}-{j}", src_tokens[i], tgt_tokens[j], float(c), float(s)]
            for (i, j), (c, s) in zip(result.links, result.scores)]
    console.print(table(f"links ({src_lang}→{tgt_lang})", ["link", "source", "target", "cos", "CSLS"], rows))
    console.print(f"wrote {output}", highlight=False)


def _pool_to_words(matrix, src_seg, tgt_seg):
    """[tokens × tokens] → [words × words], the maximum over each word pair's tokens."""
    import torch

    out = torch.full((len(src_seg.words), len(tgt_seg.words)), float("-inf"))
    for i, a in enumerate(src_seg.word_of):
        for j, b in enumerate(tgt_seg.word_of):
            out[a, b] = max(out[a, b], matrix[i, j])
    return out
