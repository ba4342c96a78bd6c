"""`xlfast show`: the similarity matrix of one sentence pair as a picture, with the links `xlfast align` writes."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xlfast.align import SCORES
from xlfast.cli.align_cmd import (DEFAULTS, AnchorsOption, Emb, EmbOption, Null, NullOption, StaticWeightOption, Sym,
                                  SymOption, align_options)
from xlfast.cli.common import (LowercaseOverride, SrcLangOption, TgtLangOption, ThreadsOption, TokenizeOverride,
                               apply_threads, choices, console, err_console, nonblank, table)
from xlfast.errors import UsageError, XlfastError
from xlfast.io import is_stdio

Score = choices("Score", SCORES)
MAX_FIGURE_INCHES = 30.0  # per side: a long sentence gets smaller cells and labels, not a picture too big to open
CELL_INCHES = 0.5  # a cell's side while the sentences fit


def show(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    src: Annotated[str, typer.Option("--src", callback=nonblank, help="The source sentence.")] = ...,
    tgt: Annotated[str, typer.Option("--tgt", callback=nonblank, help="The target sentence.")] = ...,
    output: Annotated[Path, typer.Option("--output", "-o", help="Picture to write, in the format its extension "
                                                                "names (.png, .pdf, .svg, …; none: PNG); '-': PNG "
                                                                "on standard output.")] = ...,
    emb: EmbOption = Emb(DEFAULTS.emb),
    static_weight: StaticWeightOption = DEFAULTS.static_weight,
    sym: SymOption = Sym(DEFAULTS.sym),
    null: NullOption = Null(DEFAULTS.null),
    anchors: AnchorsOption = DEFAULTS.anchors,
    score: Annotated[Score, typer.Option(help="Colour by csls (what alignment uses) or cos.")] = Score.csls,
    src_lang: SrcLangOption = None,
    tgt_lang: TgtLangOption = None,
    tokenize: TokenizeOverride = None,
    lowercase: LowercaseOverride = None,
    threads: ThreadsOption = None,
) -> None:
    """Draw the similarity matrix of one sentence pair with the links `xlfast align` would write (same options,
    same defaults): red squares; links of one direction only: white dots."""
    apply_threads(threads)
    plt = _pyplot()
    picture_format = _picture_format(output)
    from xlfast.align import picture_pair
    from xlfast.io import atomic_open
    from xlfast.run import Run

    options = align_options(emb, sym, null, static_weight, anchors)
    run = Run.load(run_dir)
    pic = picture_pair(run, src, tgt, src_lang=src_lang, tgt_lang=tgt_lang, tokenize=tokenize and tokenize.value,
                       lowercase=lowercase, options=options, score=score.value)
    result = pic.alignment

    n, m = len(pic.src_words), len(pic.tgt_words)
    cell = min(CELL_INCHES, (MAX_FIGURE_INCHES - 2.5) / max(n, m))
    labels = min(10.0, max(2.0, 20 * cell))  # points: 10 at full-size cells, smaller with the cells
    fig, ax = plt.subplots(figsize=(max(4.5, 2.5 + cell * m), max(3.5, 1.5 + cell * n)), dpi=120)
    image = ax.imshow(pic.matrix.numpy(), cmap="viridis", aspect="equal")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=pic.score)
    ax.set_xticks(range(m), pic.tgt_words, rotation=60, ha="right", fontsize=labels)
    ax.set_yticks(range(n), pic.src_words, fontsize=labels)
    ax.set_xlabel(pic.tgt_lang)
    ax.set_ylabel(pic.src_lang)
    for i, j in result.links:
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    for i, j in (result.forward | result.backward) - set(result.links):
        ax.plot(j, i, marker=".", color="white", markersize=6)
    ax.set_title(f"{options.emb} {pic.score}, {options.sym}, null={options.null}", fontsize=9)
    fig.tight_layout()
    try:
        with atomic_open(output, "wb") as f:
            fig.savefig(f, format=picture_format)
    finally:
        plt.close(fig)
    rows = [[f"{i}-{j}", pic.src_words[i], pic.tgt_words[j], float(c), float(s)]
            for (i, j), (c, s) in zip(result.links, result.scores)]
    report = err_console if is_stdio(output) else console  # a picture on standard output keeps it to itself
    report.print(table(f"links ({pic.src_lang}→{pic.tgt_lang})", ["link", "source", "target", "cos", "CSLS"], rows))
    report.print(f"wrote {'standard output' if is_stdio(output) else output} ({picture_format})", highlight=False,
                 markup=False)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise XlfastError("xlfast show needs matplotlib: pip install matplotlib") from None
    return plt


def _picture_format(output: Path) -> str:
    """The format `output` names by its extension (PNG without one), checked before any work; the picture
    goes to exactly that path (matplotlib alone would add '.png' to a name without an extension)."""
    from matplotlib.backend_bases import FigureCanvasBase

    known = FigureCanvasBase.get_supported_filetypes()
    suffix = "" if is_stdio(output) else output.suffix[1:].lower()
    if not suffix:
        return "png"
    if suffix not in known:
        raise UsageError(f"{output}: cannot draw a '.{suffix}' picture; name one of: "
                         + ", ".join(f".{k}" for k in sorted(known)))
    return suffix
