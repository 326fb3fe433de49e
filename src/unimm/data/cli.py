"""``unimm data inspect`` and ``unimm data convert``: look at a user's dataset, turn it into tar shards."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from unimm.cli_help import App
from unimm.data.canonical import CLASSES_FILE, find_canonical
from unimm.data.formats import SPLITS
from unimm.data.sources import FORMATS, Record, Source, TooManySkipsError, open_source
from unimm.data.video_store import is_video_dataset, load_video_split, read_video_meta

data_app = App(help="Datasets: inspect a source, convert it to tar shards.")

FormatOption = Annotated[str | None, typer.Option("--format", help=f"one of {', '.join(FORMATS)} (default: detect)")]
SkipOption = Annotated[float, typer.Option(help="stop when more than this fraction of samples is broken")]


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _open(path: str, fmt: str | None, max_skip_fraction: float) -> Source:
    try:
        return open_source(path, fmt, max_skip_fraction=max_skip_fraction)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)


@dataclass
class _Summary:
    """What ``inspect`` reports about the records it read."""

    records: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    splits: Counter[str] = field(default_factory=Counter)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    examples: list[Record] = field(default_factory=list)

    def add(self, record: Record, n_examples: int) -> None:
        self.records += 1
        kind = "document" if record.segments is not None else "conversation" if record.turns else "caption"
        self.kinds[kind] += 1
        self.splits[record.split or "(none)"] += 1
        if record.image is not None:
            self.sizes.append(record.image.shape[:2])
            self.kinds["rgb" if record.image.ndim == 3 else "grey"] += 1
        if len(self.examples) < n_examples:
            self.examples.append(record)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counter.items())) or "none"


def _example_text(record: Record, width: int = 100) -> str:
    if record.turns:
        text = " | ".join(f"{role}: {t}" for role, t in record.turns)
    elif record.segments is not None:
        text = " ".join(s if isinstance(s, str) else "<image>" for s in record.segments)
    else:
        text = record.text
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _class_names(path: str) -> str:
    """The class names of canonical IDX files, or how to give them."""
    names = find_canonical(path).class_names()
    if names is None:
        return f"none: write {CLASSES_FILE} beside the files (line i names label i) or set data.class_names"
    return f"{len(names)} from {CLASSES_FILE}: {', '.join(names)}"


def _inspect_video(root: Path, limit: int | None, n_examples: int) -> None:
    """Clips per split, geometry, skipped clips, digit / direction / bounce balance and examples."""
    meta = read_video_meta(root)
    table = Table(title=str(root), show_header=False)
    table.add_row("format", f"video: {meta.get('clip', 'npy clips')}, captions.jsonl per split")
    counts, digits, labels, directions, bounces = Counter(), Counter(), Counter(), Counter(), Counter()
    examples: list[dict] = []
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        data = load_video_split(root, split, max_skip_fraction=1.0)  # report every broken clip rather than stop
        records = data.records[:limit] if limit is not None else data.records
        counts[split] = len(records)
        if data.skipped.skipped:
            table.add_row(f"skipped ({split})", f"{data.skipped.skipped} ({_counts(data.skipped.reasons)})")
            for reason, key, detail in data.skipped.examples:
                table.add_row("", f"{key}: {reason}: {detail}")
        for record in records:
            tracks = record.get("truth", {}).get("digits", [])
            digits[str(len(tracks))] += 1
            for track in tracks:
                labels[str(track["label"])] += 1
                directions[track["directions"][0]] += 1
                bounces["bounce" if track["bounce_frame"] is not None else "straight"] += 1
        examples += records[: max(0, n_examples - len(examples))]
    height, width = meta["size"]
    table.add_row("clips", f"{sum(counts.values())} ({_counts(counts)})")
    table.add_row("clip size", f"{meta['frames']} frames of {height}x{width}")
    table.add_row("digits per clip", _counts(digits))
    table.add_row("classes", _counts(labels))
    table.add_row("directions", _counts(directions))
    table.add_row("bounces", _counts(bounces))
    for record in examples:
        qa = " | ".join(f"{row['question']} {row['answer']}" for row in record.get("qa", [])[:3])
        table.add_row(f"e.g. {record.get('split', '')}/{record['file']}", f"{record['caption']} ({qa})")
    Console().print(table)


@data_app.command()
def inspect(
    path: Annotated[str, typer.Argument(help="file, dir or brace pattern (shard-{000000..000003}.tar)")],
    fmt: FormatOption = None,
    limit: Annotated[int | None, typer.Option(help="read at most this many records")] = None,
    examples: Annotated[int, typer.Option(help="example records to show")] = 3,
) -> None:
    """Print a source's format, record count, skipped samples per reason, examples and image sizes."""
    if is_video_dataset(path):
        try:
            _inspect_video(Path(path), limit, examples)
        except (FileNotFoundError, ValueError) as err:
            _fail(err)
        return
    source = _open(path, fmt, max_skip_fraction=1.0)  # report every broken sample rather than stop
    summary = _Summary()
    try:
        for record in source:
            summary.add(record, examples)
            if limit is not None and summary.records >= limit:
                break
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    stats = source.stats
    table = Table(title=f"{path}", show_header=False)
    table.add_row("format", source.format)
    if source.format == "mnist-idx":
        table.add_row("class names", _class_names(path))
    table.add_row("records", str(summary.records) + (" (limit reached)" if summary.records == limit else ""))
    table.add_row("kinds", _counts(+Counter({k: summary.kinds[k] for k in ("caption", "conversation", "document")})))
    table.add_row("splits", _counts(summary.splits))
    table.add_row("skipped", f"{stats.skipped} ({_counts(stats.reasons)})")
    for reason, key, detail in stats.examples:
        table.add_row("", f"{key}: {reason}: {detail}")
    if summary.sizes:
        hs, ws = [h for h, _ in summary.sizes], [w for _, w in summary.sizes]
        table.add_row(
            "image size",
            f"{len(hs)} images, height {min(hs)}..{max(hs)} (mean {sum(hs) / len(hs):.0f}), "
            f"width {min(ws)}..{max(ws)} (mean {sum(ws) / len(ws):.0f}); "
            f"rgb={summary.kinds['rgb']}, grey={summary.kinds['grey']}",
        )
    for record in summary.examples:
        table.add_row(f"e.g. {record.key}", _example_text(record))
    console = Console()
    console.print(table)
    if stats.seen and stats.skipped > 0.01 * stats.seen:
        console.print(f"[yellow]warning: {stats.summary()}; convert stops above --max-skip-fraction[/yellow]")


@data_app.command()
def convert(
    src: Annotated[str, typer.Argument(help="file, dir or brace pattern of the source dataset")],
    out: Annotated[Path, typer.Argument(help="output dir for meta.json and <split>/shard-*.tar")],
    fmt: FormatOption = None,
    samples_per_shard: Annotated[int, typer.Option(help="samples per tar shard")] = 1000,
    image_size: Annotated[int | None, typer.Option(help="resize images to this square size")] = None,
    val_fraction: Annotated[float, typer.Option(help="fraction of keys hashed into val")] = 0.05,
    test_fraction: Annotated[float, typer.Option(help="fraction of keys hashed into test")] = 0.05,
    seed: Annotated[int, typer.Option(help="seed of the split hash")] = 0,
    max_skip_fraction: SkipOption = 0.01,
    force: Annotated[bool, typer.Option(help="replace a dataset already in OUT")] = False,
) -> None:
    """Convert a source into OUT: tar shards and meta.json, a dataset that training reads (--set data.path=OUT)."""
    from unimm.data.shards import convert_to_shards

    source = _open(src, fmt, max_skip_fraction)
    try:
        meta = convert_to_shards(
            source, out, samples_per_shard, image_size, val_fraction, test_fraction, seed, force=force
        )
    except (TooManySkipsError, FileNotFoundError, FileExistsError, ValueError) as err:
        _fail(err)
    shards = sum(len(files) for files in meta["splits"].values())
    counts = ", ".join(f"{split}={n}" for split, n in meta["counts"].items())
    typer.echo(f"{source.format} {src} -> {out}: {counts} in {shards} shards")
    typer.echo(source.stats.summary())
