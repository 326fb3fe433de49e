"""Command line: parse, validate, call the API. No modelling code lives here."""

import os
from pathlib import Path
from typing import Annotated

import typer

from unimm.data.cli import data_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="unimm: unified multimodal models.")
app.add_typer(data_app, name="data")


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="TOML preset, e.g. configs/transfusion.toml")],
    out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/latest"),
    set_: Annotated[list[str], typer.Option("--set", help="override, e.g. --set model.depth=8")] = [],
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint")] = False,
) -> None:
    """Train a strategy preset into a run directory (data-parallel under torchrun with train.parallel=ddp or fsdp)."""
    from unimm.config import ConfigError, load_config
    from unimm.train import train as run

    try:
        cfg = load_config(config, set_)
        run(cfg, out, resume=resume)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, FloatingPointError) as err:
        _fail(err)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, once
        typer.echo(f"run saved to {out}")


@app.command()
def caption(
    run: Annotated[Path, typer.Argument(help="run directory (or save_pretrained directory)")],
    images: Annotated[list[Path], typer.Argument(help="image files (PNG/JPEG)")],
    question: Annotated[str | None, typer.Option(help="ask a question instead of captioning")] = None,
) -> None:
    """Understanding: caption images, or answer a question about them."""
    from unimm.io import load_images
    from unimm.models import UnifiedModel

    try:
        model = UnifiedModel.from_pretrained(run)
        batch = load_images(images, model.cfg.data.image_size, model.cfg.data.channels, model.background)
        texts = model.caption(batch, question=question)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    for path, text in zip(images, texts, strict=True):
        typer.echo(f"{path}\t{text}")


@app.command()
def generate(
    run: Annotated[Path, typer.Argument(help="run directory (or save_pretrained directory)")],
    prompt: Annotated[list[str], typer.Argument(help="one or more prompts")],
    out: Annotated[Path, typer.Option(help="PNG grid to write")] = Path("grid.png"),
    n: Annotated[int, typer.Option(help="images per prompt")] = 8,
    cfg: Annotated[float | None, typer.Option(help="classifier-free guidance scale")] = None,
    steps: Annotated[int | None, typer.Option(help="sampling steps")] = None,
    sampler: Annotated[str | None, typer.Option(help="ddpm | ddim | flow_euler | flow_heun")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Generation: prompts -> a PNG grid (one row per prompt)."""
    import torch

    from unimm.io import save_grid
    from unimm.models import UnifiedModel

    try:
        model = UnifiedModel.from_pretrained(run)
        gen = torch.Generator().manual_seed(seed)
        prompts = [p for p in prompt for _ in range(n)]
        images = model.generate(prompts, cfg_scale=cfg, steps=steps, sampler=sampler, generator=gen)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    save_grid(images, out, nrow=n)
    typer.echo(f"wrote {out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/demo"),
    config: Annotated[Path, typer.Option(help="preset to train")] = Path("configs/quick.toml"),
    set_: Annotated[list[str], typer.Option("--set", help="config override")] = [],
) -> None:
    """Train the quick preset on MNIST, then caption, generate and write a report."""
    from unimm.config import ConfigError, load_config
    from unimm.demo import run_demo
    from unimm.provenance import command_line

    try:
        report = run_demo(load_config(config, set_), out, command=command_line())
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as err:
        _fail(err)
    typer.echo(f"report: {report}")


@app.command("eval")
def eval_(
    run: Annotated[Path, typer.Argument(help="run directory (or save_pretrained directory)")],
    suite: Annotated[str, typer.Option(help="quick | full | demo | atlas")] = "quick",
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path | None, typer.Option(help="output directory (default: RUN/eval)")] = None,
    data: Annotated[Path | None, typer.Option(help="dataset to evaluate on (default: the run's data.path)")] = None,
    inception: Annotated[Path | None, typer.Option(help="local InceptionV3 FID weights (needs torch-fidelity)")] = None,
) -> None:
    """Evaluate a run: understanding, generation and cost metrics -> eval.json, eval.md, sample grids."""
    import time

    from unimm.eval.harness import evaluate
    from unimm.eval.report import write_eval
    from unimm.models import UnifiedModel
    from unimm.provenance import command_line, provenance

    try:
        model = UnifiedModel.from_pretrained(run)
        t0 = time.perf_counter()
        result = evaluate(
            model, suite, seed=seed, data_path=data, run_dir=run, progress=True, inception_weights=inception
        )
        wall = {"evaluate": round(time.perf_counter() - t0, 2)}
        result["provenance"] = provenance(run / "config.toml", wall, command_line())
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as err:
        _fail(err)
    paths = write_eval(result, out or run / "eval", title=f"{model.cfg.name} ({run})")
    u, g = result["understanding"], result["generation"]
    head = {k: u[k] for k in ("caption_accuracy", "exact_match", "vqa_accuracy") if k in u}
    head.update({k: g[k] for k in ("prompt_accuracy", "fid", "clip_score") if k in g})
    typer.echo(" ".join(f"{k}={v:.4g}" for k, v in head.items()))
    typer.echo(f"wrote {paths['json']} and {paths['md']}")


@app.command()
def atlas(
    config: Annotated[Path, typer.Argument(help="atlas TOML, e.g. configs/atlas/quick.toml")],
    out: Annotated[Path, typer.Option(help="atlas directory (runs/, figures/, report.md, report.html)")] = Path(
        "runs/atlas"
    ),
    jobs: Annotated[int | None, typer.Option(help="runs in parallel (default: the config's jobs)", min=1)] = None,
    report_only: Annotated[bool, typer.Option(help="write the report from the runs on disk; train nothing")] = False,
) -> None:
    """Decision atlas: train every strategy to the same budget, evaluate, and report what the numbers show."""
    from unimm.atlas import load_atlas, run_atlas
    from unimm.config import ConfigError

    try:
        outcomes, report = run_atlas(load_atlas(config), out, jobs=jobs, report_only=report_only)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(f"report: {report} and {report.with_suffix('.html')}")
    failed = [o.name for o in outcomes if o.status == "failed"]
    if failed:
        typer.secho(f"{len(failed)} run(s) failed: {', '.join(failed)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@app.command()
def reports(
    only: Annotated[list[str], typer.Option(help="run only this target (repeatable): demo, chameleon, ...")] = [],
    tables_only: Annotated[bool, typer.Option(help="only rewrite the tables from the committed reports")] = False,
    dry_run: Annotated[bool, typer.Option(help="print what would run; run nothing")] = False,
    root: Annotated[Path, typer.Option(help="repository root (configs/, docs/, README.md)")] = Path("."),
) -> None:
    """Regenerate every report the docs quote (demo, each strategy preset), publish it into docs/ and rewrite
    the README tables; runs resume from $UNIMM_CACHE/reports/."""
    from unimm.config import ConfigError
    from unimm.reports import describe, rewrite_tables, run_reports, select

    try:
        targets = select([name for item in only for name in item.split(",") if name])
        if dry_run:
            for line in describe([] if tables_only else targets, root):
                typer.echo(line)
            return
        if not tables_only:
            run_reports(targets, root)
        changed = rewrite_tables(root)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(f"rewrote the tables of {', '.join(changed)}" if changed else "tables already up to date")


config_app = typer.Typer(no_args_is_help=True, help="Configs: convert old ones, list the part kinds.")
app.add_typer(config_app, name="config")


@config_app.command("upgrade")
def config_upgrade(
    old: Annotated[Path, typer.Argument(help="an old-style config ([image] / [objective] sections)")],
    out: Annotated[Path | None, typer.Option(help="file to write (default: print it)")] = None,
) -> None:
    """Convert an old-style config to sections by part ([writer], [codec], [reader], [text], [layers], [denoiser])."""
    import tomllib

    from unimm.checkpoint import atomic_write_text
    from unimm.config import ConfigError, toml_text, validate
    from unimm.config_upgrade import is_old_style, upgrade

    try:
        text = old.read_text()
        raw = tomllib.loads(text)
        if not is_old_style(raw):
            raise ValueError(f"{old} is already in today's form; nothing to upgrade")
        new = upgrade(raw)
        validate(new)  # the result must load
    except (OSError, tomllib.TOMLDecodeError, ConfigError, ValueError) as err:
        _fail(err)
    header = []
    for line in text.splitlines():  # keep the file's leading comment block
        if not line.startswith("#"):
            break
        header.append(line)
    result = "\n".join(header) + ("\n" if header else "") + toml_text(new)
    if out is None:
        typer.echo(result, nl=False)
    else:
        atomic_write_text(out, result)
        typer.echo(f"wrote {out}")


@config_app.command("kinds")
def config_kinds() -> None:
    """Every part, its kinds and each kind's settings with their defaults."""
    from unimm.settings import registry

    for part in ("layers", "codec", "writer", "denoiser", "reader", "connector", "text"):
        reg = registry(part)
        typer.echo(f"[{part if part != 'connector' else 'reader.connector'}]")
        for kind in reg.kinds():
            fields = reg.validate({"kind": kind}, part).model_dump(exclude={"kind"})
            shown = ", ".join(f"{k} = {v!r}" for k, v in fields.items() if not isinstance(v, dict))
            typer.echo(f"  kind = {kind!r}" + (f": {shown}" if shown else ""))


tokenizer_app = typer.Typer(no_args_is_help=True, help="Image tokenizers (VQ-VAE, KL-VAE).")
app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("train")
def tokenizer_train(
    config: Annotated[Path, typer.Argument(help="TOML preset, e.g. configs/tok/vq.toml")],
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/tokenizer"),
    set_: Annotated[list[str], typer.Option("--set", help="override, e.g. --set tokenizer.codebook_size=512")] = [],
) -> None:
    """Train an image tokenizer; writes tokenizer.safetensors, config.toml and metrics.json."""
    from unimm.config import ConfigError, TokenizerConfig, load_config
    from unimm.tokenizers.train import train_tokenizer

    try:
        result = train_tokenizer(load_config(config, set_, schema=TokenizerConfig), out)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        _fail(err)
    val = result["val"]
    extra = f", code usage {val['usage']:.2f}, perplexity {val['perplexity']:.1f}" if "usage" in val else ""
    typer.echo(f"{out}: val PSNR {val['psnr']:.2f} dB (MSE {val['mse']:.4f}){extra}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
