"""The run directory: every file `xlfast train` writes, and the only code that names, reads or writes them.

    config.json        model + training settings, languages, corpora, tokenizer (reused by align/mine/eval)
    vocab.<lang>.txt   vocabulary, one word per line (specials first, then by frequency)
    spm.<lang>.model   SentencePiece model of each language (subword runs)
    pieces.txt         the piece table shared by all languages (subword runs)
    checkpoint.pt      the last evaluation (an epoch's end, or a step within it): model, optimiser, RNG, where
                       the epoch stands, selection state (for --resume)
    model.pt           the selected model
    emb.<lang>.vec     static subword-aware vectors of the selected model (word2vec text)
    log.jsonl          one line per evaluation: its epoch and step, the epoch's statistics so far, the score
    corpus/            the training corpora as memory-mapped word ids (xlfast.corpus_store), reused on --resume
    pretrained/        frozen pre-trained vectors (`--pretrained`): <lang>.npy (float32 rows) and <lang>.ids.npy
                       (the word id of each row), written once and memory-mapped; never inside a .pt file

Every file is written atomically (temporary file, fsync, rename: a reader or a resumed run never sees half a
file), and every file read back that is damaged is one line naming it, never a traceback.
"""
from __future__ import annotations

import json
import math
import os
import queue
import threading
from pathlib import Path

import numpy as np
import torch

from xlfast.errors import InputError, XlfastError
from xlfast.io import atomic_open, atomic_write_text, write_vec
from xlfast.pretrained import PretrainedRows

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
LOG = "log.jsonl"
PIECES = "pieces.txt"


class RunDir:
    """The files of one run directory (which need not exist yet)."""

    def __init__(self, path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------------------------------ names
    config_path = property(lambda self: self.path / CONFIG)
    checkpoint_path = property(lambda self: self.path / CHECKPOINT)
    model_path = property(lambda self: self.path / MODEL)
    log_path = property(lambda self: self.path / LOG)
    pieces_path = property(lambda self: self.path / PIECES)

    @property
    def corpus_dir(self) -> Path:
        return self.path / "corpus"

    def vocab_path(self, lang: str) -> Path:
        return self.path / f"vocab.{lang}.txt"

    def spm_path(self, lang: str) -> Path:
        return self.path / f"spm.{lang}.model"

    def vec_path(self, lang: str) -> Path:
        return self.path / f"emb.{lang}.vec"

    def pretrained_paths(self, lang: str) -> tuple[Path, Path]:
        """The word ids and the frozen vectors of a language's pre-trained rows."""
        folder = self.path / "pretrained"
        return folder / f"{lang}.ids.npy", folder / f"{lang}.npy"

    # ------------------------------------------------------------------------------------ what is here
    def is_run(self) -> bool:
        """Whether this is a run directory (it has a config.json), trained or not."""
        return self.config_path.is_file()

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def has_model(self) -> bool:
        return self.model_path.is_file()

    def holds_trained_run(self) -> bool:
        """A configuration and at least one evaluation (checkpoint): starting a new run here would destroy it."""
        return self.is_run() and (self.has_checkpoint() or self.has_model())

    def langs(self) -> list[str]:
        """The run's languages (config.json), or for a directory of vectors without one, the languages of
        its emb.<lang>.vec files."""
        if self.is_run():
            return list(self._config_doc()["langs"])
        return sorted(p.name[len("emb.") : -len(".vec")] for p in self.path.glob("emb.*.vec"))

    def check_writable(self) -> None:
        """Fail now, before any work, if the run directory could not be created or written here."""
        if self.path.exists() and not self.path.is_dir():
            raise XlfastError(f"{self.path}: exists and is not a directory (-o names the run directory)")
        existing = self.path
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise XlfastError(f"{self.path}: cannot create a directory inside {existing}, which is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise XlfastError(f"{self.path}: cannot write in {existing} (permission denied)")

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise XlfastError(f"{self.path}: cannot create the run directory ({exc.strerror or exc})") from None

    # ---------------------------------------------------------------------------------------- reading
    def read_config(self) -> dict:
        """config.json as written by `write_config`: {"train": {...}, "model": {...}, "langs": [...]}."""
        doc = self._config_doc()
        if not all(isinstance(doc.get(key), dict) for key in ("train", "model")):
            raise self.bad_config("no 'train' and 'model' settings")
        return doc

    def _config_doc(self) -> dict:
        """config.json with its list of languages (all that a folder of vectors such as `map` reads needs)."""
        path = self.config_path
        if not path.is_file():
            raise XlfastError(f"{self.path}: not an xlfast run directory (no {CONFIG})")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self.bad_config(type(exc).__name__) from None
        if not isinstance(doc, dict):
            raise self.bad_config("no 'train' and 'model' settings")
        langs = doc.get("langs")
        if not isinstance(langs, list) or not all(isinstance(x, str) for x in langs):
            raise self.bad_config("no list of languages")
        return doc

    def bad_config(self, why: str) -> InputError:
        """The error for a config.json that is not what `xlfast train` wrote."""
        return InputError(self.config_path, f"not a readable run configuration ({why})")

    def model_config(self, doc: dict | None = None):
        from xlfast.model import ModelConfig

        doc = self.read_config() if doc is None else doc
        try:
            return ModelConfig.from_dict(doc["model"])
        except TypeError as exc:
            raise self.bad_config(str(exc)) from None

    def tokenizer(self, doc: dict | None = None):
        """How the run's training text was tokenised (align, mine and nn tokenise the same way)."""
        from xlfast.tokenize import TokenizerSpec

        doc = self.read_config() if doc is None else doc
        try:
            return TokenizerSpec.from_dict(doc["train"]["tokenizer"])
        except (KeyError, TypeError, XlfastError) as exc:
            raise self.bad_config(f"tokenizer: {exc}") from None

    def _lines(self, path: Path) -> list[str]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(path, "missing from the run directory") from None
        except UnicodeDecodeError:
            raise InputError(path, "not UTF-8 text (damaged?)") from None
        return text.split("\n")[:-1]

    def read_vocab(self, lang: str) -> list[str]:
        """Word ids of `lang`: line i holds word i (specials first)."""
        return self._lines(self.vocab_path(lang))

    def read_pieces(self) -> list[str]:
        return self._lines(self.pieces_path)

    def segmenter(self, lang: str):
        from xlfast.subwords import Segmenter

        path = self.spm_path(lang)
        try:
            return Segmenter.load(path)
        except FileNotFoundError:
            raise InputError(path, "missing from the run directory") from None
        except (RuntimeError, OSError):
            raise InputError(path, "not a readable SentencePiece model (truncated?)") from None

    def load_state(self, name: str = MODEL, device="cpu") -> dict:
        """A saved state (model.pt or checkpoint.pt) with its tensors on `device`."""
        path = self.path / name
        if not path.is_file():
            raise XlfastError(f"{self.path}: no {name} yet (training has not reached its first evaluation)")
        try:
            # weights_only: a damaged or foreign file cannot run code while it is read
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception:  # noqa: BLE001 - torch raises anything from zip, pickle and storage errors
            raise InputError(path, "not a readable checkpoint (truncated?)") from None
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise InputError(path, "not an xlfast checkpoint (no model state)")
        return state

    def read_pretrained(self, mcfg) -> dict[str, PretrainedRows]:
        """The frozen pre-trained rows of every language that has them (`mcfg.pretrained`), memory-mapped
        copy-on-write (torch takes them as they are; nothing ever writes to the files)."""
        out = {}
        for lang, size in mcfg.pretrained.items():
            arrays = []
            for path, shape in zip(self.pretrained_paths(lang), ((size["rows"],), (size["rows"], mcfg.dim))):
                try:
                    array = np.load(path, mmap_mode="c")
                except FileNotFoundError:
                    raise InputError(path, "missing from the run directory") from None
                except (OSError, ValueError):
                    raise InputError(path, "not a readable array (truncated?)") from None
                if array.shape != shape:
                    raise InputError(path, f"does not match {CONFIG} (shape {array.shape}, expected {shape})")
                arrays.append(array)
            out[lang] = PretrainedRows(*arrays)
        return out

    def load_model(self, name: str = MODEL, device="cpu", mcfg=None):
        """The model saved in `name`, built as config.json describes it, with the run's frozen pre-trained
        vectors, on `device`."""
        from xlfast.model import model_class

        mcfg = self.model_config() if mcfg is None else mcfg
        state = self.load_state(name, device)["model"]
        frozen = self.read_pretrained(mcfg)
        try:
            model = model_class(mcfg).from_state(mcfg, state, frozen)
        except (RuntimeError, KeyError, ValueError, IndexError) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(self.path / name, f"does not match {CONFIG} ({why})") from None
        return model.to(device)

    def read_log(self) -> list[dict]:
        """The evaluations' records. A last line cut short (the process was killed while appending it) is left out."""
        if not self.log_path.is_file():
            return []
        lines = [line for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines() if line]
        records = []
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number < len(lines):
                    raise InputError(self.log_path, "not a JSON record", number) from None
        return records

    # ---------------------------------------------------------------------------------------- writing
    def write_config(self, doc: dict) -> None:
        atomic_write_text(self.config_path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")

    def write_vocab(self, lang: str, words: list[str]) -> None:
        atomic_write_text(self.vocab_path(lang), "".join(w + "\n" for w in words))

    def write_pieces(self, table: list[str]) -> None:
        atomic_write_text(self.pieces_path, "".join(p + "\n" for p in table))

    def write_segmenter(self, lang: str, segmenter) -> None:
        with atomic_open(self.spm_path(lang), "wb") as f:
            f.write(segmenter.model_bytes)

    def write_pretrained(self, lang: str, rows: PretrainedRows) -> None:
        for path, array in zip(self.pretrained_paths(lang), (rows.ids, rows.vectors)):
            path.parent.mkdir(exist_ok=True)
            with atomic_open(path, "wb") as f:
                np.save(f, array)

    def save_state(self, state: dict, name: str) -> None:
        with atomic_open(self.path / name, "wb") as f:
            torch.save(state, f)

    def write_vectors(self, lang: str, words: list[str], vectors) -> None:
        write_vec(self.vec_path(lang), words, vectors)

    def append_log(self, record: dict) -> None:
        """One evaluation's line, on disk before training goes on (a killed run keeps every evaluation)."""
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def remove_stale_temporaries(self) -> None:
        """Delete the temporary files of writes a killed process never finished (`atomic_open` names them
        `.<file>.<random>.tmp`): a checkpoint's is as large as the checkpoint."""
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def truncate_log(self, epoch: int, step: int | None = None) -> None:
        """Drop the lines of evaluations after `step` of `epoch` (None: after its end): a resumed run trains
        from there again; a new run (epoch 0) drops all. A line without a step is an epoch's end."""
        end = (epoch, math.inf if step is None else step)
        kept = [r for r in self.read_log() if (r["epoch"], r.get("step", math.inf)) <= end] if epoch else []
        atomic_write_text(self.log_path, "".join(json.dumps(r) + "\n" for r in kept))


def epoch_ends(records: list[dict]) -> list[dict]:
    """The records of log.jsonl that end an epoch: their statistics are the whole epoch's (a record of a run
    from before mid-epoch evaluations has no step, and is one)."""
    return [r for r in records if r.get("step") == r.get("epoch_steps")]


class CheckpointWriter:
    """Writes states of a run in a background thread, so an epoch does not wait for the disk.

    `snapshot` copies every tensor of a state into CPU buffers kept from the previous epoch (a fresh
    100 MB tensor would page-fault its way in), so training may change the parameters while the copy
    is written. Files are written one at a time in the order they were asked for, each atomically. The
    thread is not a daemon: a pending write finishes even when the process is interrupted."""

    def __init__(self, run: RunDir):
        self.run = run
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._buffers: dict[str, torch.Tensor] = {}
        self._thread = threading.Thread(target=self._work, name="xlfast-checkpoint", daemon=False)
        self._thread.start()

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self.run.save_state(*item)
            except BaseException as exc:  # noqa: BLE001 - reported to the training thread by wait()
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise XlfastError(f"cannot write a checkpoint in {self.run}: {error}") from error

    def wait(self) -> None:
        """Block until every asked-for file is on disk; re-raise a failed write here."""
        self._queue.join()
        self._raise()

    def snapshot(self, obj, key: str = ""):
        """A copy of `obj` (nested dicts/lists of tensors and plain values) whose tensors live in this
        writer's reused CPU buffers. Waits for pending writes first: they read those buffers."""
        if key == "":
            self.wait()
        if isinstance(obj, torch.Tensor):
            buf = self._buffers.get(key)
            if buf is None or buf.shape != obj.shape or buf.dtype != obj.dtype:
                buf = self._buffers[key] = torch.empty(obj.shape, dtype=obj.dtype)
            return buf.copy_(obj.detach())
        if isinstance(obj, dict):
            return {k: self.snapshot(v, f"{key}/{k}") for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.snapshot(v, f"{key}/{i}") for i, v in enumerate(obj))
        return obj

    def write(self, state: dict, name: str) -> None:
        """Queue `state` (a snapshot) to be written as `name` in the run directory."""
        self._queue.put((state, name))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise()
