"""Command line: parse, validate, call the API. No modelling code lives here."""

import os
from pathlib import Path
from typing import Annotated

import typer

from unimm.cli_help import App
from unimm.data.cli import data_app
from unimm.eval.suites import SUITE_NAMES

app = App(help="unimm: unified multimodal models.")
app.add_typer(data_app, name="data")

SetOption = Annotated[
    list[str],
    typer.Option(
        "--set", metavar="KEY=VALUE", help="override a config key; repeat --set for each, e.g. --set model.depth=8"
    ),
]
GRID_LIMIT = 1024  # images one `generate` grid may hold; more go to a directory, one file each


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"unimm {version('unimm')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            from unimm import __version__

            typer.echo(f"unimm {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print unimm's version and exit")
    ] = False,
) -> None:
    """unimm: unified multimodal models."""


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="TOML preset, e.g. configs/transfusion.toml")],
    out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/latest"),
    set_: SetOption = [],
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint")] = False,
) -> None:
    """Train a strategy preset into a run directory (data-parallel under torchrun with train.parallel=ddp or fsdp)."""
    from unimm.cli_checks import check_out_dir
    from unimm.config import ConfigError, load_config
    from unimm.train import train as run

    try:
        check_out_dir(out)
        cfg = load_config(config, set_)
        run(cfg, out, resume=resume)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, FloatingPointError) as err:
        _fail(err)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, once
        typer.echo(f"run saved to {out}")


@app.command()
def finetune(
    base: Annotated[Path, typer.Argument(help="the trained run directory to start from")],
    out: Annotated[Path, typer.Option(help="run directory of the fine-tune")] = Path("runs/finetune"),
    config: Annotated[
        Path | None, typer.Option(help="TOML with the fine-tune's own keys ([data], [train], [train.lora], [sample])")
    ] = None,
    set_: SetOption = [],
    lora: Annotated[
        bool, typer.Option(help="train LoRA adapters (the [train.lora] defaults) instead of every weight")
    ] = False,
    resume: Annotated[bool, typer.Option(help="continue the fine-tune in --out from its last checkpoint")] = False,
) -> None:
    """Fine-tune a trained run, in full or with LoRA adapters (--lora or --set train.lora.rank=8), on its data or
    other data (--set data.path=...): docs/finetune.md."""
    from unimm.cli_checks import check_out_dir
    from unimm.config import ConfigError
    from unimm.train import train as run
    from unimm.train.finetune import finetune_config

    try:
        check_out_dir(out)
        cfg = finetune_config(base, config, (["train.lora={}"] if lora else []) + set_)
        run(cfg, out, resume=resume)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, FloatingPointError) as err:
        _fail(err)
    if os.environ.get("RANK", "0") == "0":
        typer.echo(f"run saved to {out}")


@app.command()
def merge(
    run: Annotated[Path, typer.Argument(help="a LoRA fine-tune's run directory")],
    out: Annotated[Path, typer.Option(help="directory of the merged model")] = Path("runs/merged"),
) -> None:
    """Fold a LoRA fine-tune's adapters into its weights: a plain model directory with the same outputs."""
    from unimm.cli_checks import check_out_dir
    from unimm.train.finetune import merge_run

    try:
        check_out_dir(out)
        merge_run(run, out)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(f"merged model saved to {out}")


@app.command()
def fork(
    stable: Annotated[Path, typer.Argument(help="a run with train.schedule = 'wsd' (the stable phase)")],
    steps: Annotated[int, typer.Option(min=1, help="the branch's budget: total steps, cooldown included")],
    out: Annotated[Path, typer.Option(help="run directory of the branch")],
    set_: SetOption = [],
) -> None:
    """A cooldown branch: continue a WSD run from its checkpoint at steps * (1 - train.cooldown) and decay as a
    WSD run of --steps steps would (the stable run needs train.branches listing --steps); see docs/scaling.md."""
    from unimm.cli_checks import check_out_dir
    from unimm.config import ConfigError
    from unimm.train.fork import fork as run

    try:
        check_out_dir(out)
        run(stable, out, steps, set_)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, FloatingPointError) as err:
        _fail(err)
    typer.echo(f"branch saved to {out}")


@app.command()
def caption(
    run: Annotated[Path, typer.Argument(help="run directory (or save_pretrained directory)")],
    images: Annotated[list[Path], typer.Argument(help="image files (PNG/JPEG); a video model: .npy clips")],
    question: Annotated[str | None, typer.Option(help="ask a question instead of captioning")] = None,
) -> None:
    """Understanding: caption images (or a video model's clips), or answer a question about them."""
    from unimm.io import load_clips, load_images
    from unimm.models import UnifiedModel

    try:
        model = UnifiedModel.from_pretrained(run)
        d = model.cfg.data
        if d.frames is not None:  # a video model reads clips
            batch = load_clips(images, d.frames, d.image_size, d.channels)
        else:
            batch = load_images(images, d.image_size, d.channels, model.background)
        texts = model.caption(batch, question=question)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    for path, text in zip(images, texts, strict=True):
        typer.echo(f"{path}\t{text}")


@app.command()
def edit(
    run: Annotated[
        Path, typer.Argument(help="run directory of a model trained on edits (or save_pretrained directory)")
    ],
    image: Annotated[list[Path], typer.Option(help="image to edit (PNG/JPEG); repeat for several")],
    instruction: Annotated[
        list[str], typer.Option(help="what to change, e.g. 'make the circle blue'; one, or one per --image")
    ],
    out: Annotated[Path, typer.Option(help="an image file: one row per image, the source then its edit")] = Path(
        "edited.png"
    ),
    cfg: Annotated[float | None, typer.Option(help="classifier-free guidance scale (default: the run's)")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="sampling steps (default: the run's sample.steps)")] = None,
    seed: Annotated[int, typer.Option(help="the same seed gives the same edits")] = 0,
) -> None:
    """Editing: apply an instruction to each image (UnifiedModel.edit); writes source and edit side by side."""
    import torch

    from unimm.cli_checks import check_out_image
    from unimm.io import load_images, save_grid
    from unimm.models import UnifiedModel

    try:
        if len(instruction) not in (1, len(image)):
            raise ValueError(f"give one --instruction, or one per --image ({len(image)}), not {len(instruction)}")
        check_out_image(out)
        model = UnifiedModel.from_pretrained(run)
        d = model.cfg.data
        sources = load_images(image, d.image_size, d.channels, model.background)
        texts = instruction * len(image) if len(instruction) == 1 else instruction
        edited = model.edit(sources, texts, cfg_scale=cfg, steps=steps, generator=torch.Generator().manual_seed(seed))
        save_grid(torch.stack([sources, edited.cpu()], 1).flatten(0, 1), out, nrow=2)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(f"wrote {out}")


@app.command()
def chat(
    run: Annotated[Path, typer.Argument(help="run directory (or save_pretrained directory)")],
    out: Annotated[Path, typer.Option(help="directory for the images the model answers with")] = Path("chat"),
    max_new_tokens: Annotated[int, typer.Option(min=1, max=512, help="text tokens per reply at most")] = 64,
    max_images: Annotated[int, typer.Option(min=0, max=16, help="images per reply at most")] = 4,
    temperature: Annotated[float, typer.Option(min=0, help="text sampling temperature (0: greedy)")] = 0.0,
    cfg: Annotated[float | None, typer.Option(help="classifier-free guidance scale (default: the run's)")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="image sampling steps (default: the run's)")] = None,
    seed: Annotated[int, typer.Option(help="the same seed and input give the same conversation")] = 0,
) -> None:
    """Chat: a multi-turn conversation, images in and out, kept in the KV cache across turns. Type a message and
    press Enter. `/image PATH` attaches an image file (PNG/JPEG) to your next message (up to 4); `/help` lists the
    commands; `/quit` or Ctrl-D leaves. The model answers with text and images; each image is saved as
    OUT/turnT-I.png and its path printed. A bad line (missing or unreadable file, over-long message) prints one
    error line and the conversation goes on. Needs a model with left-to-right text (not text.kind = 'masked')."""
    import sys

    import torch

    from unimm.chat import ChatSession
    from unimm.chat_terminal import run_terminal
    from unimm.io import load_images, save_images
    from unimm.models import UnifiedModel
    from unimm.models.continuation import DecodeSettings

    try:
        model = UnifiedModel.from_pretrained(run)
        if model.cfg.data.frames is not None:
            raise ValueError("unimm chat takes images; this is a video model")
        settings = DecodeSettings(max_new_tokens, max_images, temperature, cfg_scale=cfg, steps=steps)
        session = ChatSession(model, settings, torch.Generator().manual_seed(seed))
        out.mkdir(parents=True, exist_ok=True)
    except (FileNotFoundError, ValueError, NotImplementedError) as err:
        _fail(err)
    d = model.cfg.data
    interactive = sys.stdin.isatty()
    typer.echo(f"chatting with {run} ({model.cfg.writer.kind} writer); /help for commands, /quit to leave")
    run_terminal(
        session,
        sys.stdin,
        typer.echo,
        out,
        lambda path: load_images([path], d.image_size, d.channels, model.background)[0],
        lambda image, path: save_images(image[None], [path], scale=1),
        prompt=(lambda: typer.echo("you> ", nl=False)) if interactive else (lambda: None),
    )


@app.command()
def generate(
    run: Annotated[Path, typer.Argument(help="run directory (or save_pretrained directory)")],
    prompt: Annotated[list[str], typer.Argument(help="one or more prompts, each quoted")],
    out: Annotated[
        Path,
        typer.Option(
            help="an image file (.png, .jpg, .webp, ...): one grid, a row per prompt, at most "
            f"{GRID_LIMIT:,} images; a directory (one that exists, or a path without a suffix): one PNG per "
            "image, P-I.png for prompt P's image I, written batch by batch, with prompts.txt (a video model: .gif, "
            "animated)"
        ),
    ] = Path("grid.png"),
    n: Annotated[int, typer.Option(min=1, help="images per prompt")] = 8,
    batch_size: Annotated[int, typer.Option(min=1, help="images sampled at once (memory grows with it)")] = 64,
    cfg: Annotated[float | None, typer.Option(help="classifier-free guidance scale (default: the run's)")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="sampling steps (default: the run's sample.steps)")] = None,
    sampler: Annotated[str | None, typer.Option(help="ddpm | ddim | flow_euler | flow_heun | ar | maskgit")] = None,
    seed: Annotated[int, typer.Option(help="the same seed and --batch-size give the same images")] = 0,
) -> None:
    """Generation: prompts -> images, sampled --batch-size at a time with a progress bar, into one grid or a
    directory of files (see --out)."""
    import torch
    from tqdm import tqdm

    from unimm.cli_checks import check_out_dir, check_out_image
    from unimm.io import image_format, save_animated_grid, save_grid, save_images
    from unimm.models import UnifiedModel

    to_dir = out.is_dir() or not out.suffix
    prompts = [p for p in prompt for _ in range(n)]
    try:
        if to_dir:
            check_out_dir(out)
        else:
            check_out_image(out)
            if len(prompts) > GRID_LIMIT:
                raise ValueError(
                    f"a grid holds at most {GRID_LIMIT:,} images, asked for {len(prompts):,}; "
                    "give a directory as --out to write one file per image"
                )
        model = UnifiedModel.from_pretrained(run)
        clips = model.cfg.data.frames is not None  # a video model: each sample is a clip, written as a GIF
        if clips and not to_dir and image_format(out) != "GIF":
            raise ValueError(
                f"--out {out}: a video model generates clips; name a .gif (an animated grid) or a directory"
            )
        suffix = "gif" if clips else "png"
        gen = torch.Generator().manual_seed(seed)
        width, grid = len(str(n - 1)), []
        with tqdm(total=len(prompts), desc="generate", unit="image") as bar:
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                images = model.generate(chunk, cfg_scale=cfg, steps=steps, sampler=sampler, generator=gen).cpu()
                if to_dir:
                    names = [f"{j // n}-{j % n:0{width}d}.{suffix}" for j in range(start, start + len(chunk))]
                    if clips:
                        for clip, name in zip(images, names, strict=True):
                            save_animated_grid(clip[None], out / name, nrow=1)
                    else:
                        save_images(images, [out / name for name in names])
                else:
                    grid.append(images)
                bar.update(len(chunk))
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    if to_dir:
        from unimm.checkpoint import atomic_write_text

        atomic_write_text(out / "prompts.txt", "".join(f"{i}\t{p}\n" for i, p in enumerate(prompt)))
        typer.echo(f"wrote {len(prompts)} images and prompts.txt to {out}")
    else:
        (save_animated_grid if clips else save_grid)(torch.cat(grid), out, nrow=n)
        typer.echo(f"wrote {out}")


@app.command()
def serve(
    run: Annotated[Path, typer.Argument(help="run directory (or save_pretrained directory)")],
    host: Annotated[str, typer.Option(help="address to bind (default: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    max_image_bytes: Annotated[int, typer.Option(min=1, help="largest image upload, in bytes")] = 4_000_000,
    max_image_side: Annotated[int, typer.Option(min=1, help="longest image side, in pixels")] = 2048,
    max_n: Annotated[int, typer.Option(min=1, help="most images per generation request")] = 16,
    max_steps: Annotated[int, typer.Option(min=1, help="most sampling steps per generation request")] = 200,
    max_prompt_chars: Annotated[int, typer.Option(min=1, help="longest prompt or question, in characters")] = 2000,
    timeout: Annotated[float, typer.Option(min=0.001, help="seconds a request may wait for the model")] = 120.0,
    max_concurrent: Annotated[int, typer.Option(min=1, help="requests in flight at once (429 past it)")] = 64,
    max_batch: Annotated[int, typer.Option(min=1, help="requests batched into one model call")] = 16,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="how long a request waits for a batch to fill")] = 10.0,
) -> None:
    """HTTP API over a run (OpenAI-shaped /v1/chat/completions and /v1/images/generations); see docs/serve.md."""
    import uvicorn

    from unimm.serve import ServeLimits, create_app

    limits = ServeLimits(
        max_image_bytes=max_image_bytes,
        max_image_side=max_image_side,
        max_n=max_n,
        max_steps=max_steps,
        max_prompt_chars=max_prompt_chars,
        timeout_s=timeout,
        max_concurrent=max_concurrent,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
    )
    try:
        api = create_app(run, limits)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    uvicorn.run(api, host=host, port=port)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/demo"),
    config: Annotated[Path, typer.Option(help="preset to train")] = Path("configs/quick.toml"),
    set_: SetOption = [],
) -> None:
    """Train the quick preset on MNIST, then caption, generate and write a report (a video dataset: the video
    metrics, an animated GIF and frame strips; e.g. --config configs/recipes/video.toml)."""
    from unimm.cli_checks import check_out_dir
    from unimm.config import ConfigError, load_config
    from unimm.demo import run_demo
    from unimm.provenance import command_line

    try:
        check_out_dir(out)
        check_out_dir(out / "report", "--out")
        report = run_demo(load_config(config, set_), out, command=command_line())
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as err:
        _fail(err)
    typer.echo(f"report: {report}")


@app.command("demo-check")
def demo_check(
    report: Annotated[Path, typer.Argument(help="demo run directory or its report.json")] = Path("runs/demo"),
    caption: Annotated[
        float | None, typer.Option(help="image demo: floor for caption accuracy [0.95]", min=0, max=1)
    ] = None,
    generated: Annotated[
        float | None, typer.Option(help="image demo: floor for generated accuracy [0.95]", min=0, max=1)
    ] = None,
    frame_prompt: Annotated[
        float | None, typer.Option(help="video demo: floor for per-frame prompt accuracy [0.90]", min=0, max=1)
    ] = None,
    motion: Annotated[
        float | None, typer.Option(help="video demo: floor for motion accuracy [0.80]", min=0, max=1)
    ] = None,
    direction: Annotated[
        float | None, typer.Option(help="video demo: floor for direction QA accuracy [0.90]", min=0, max=1)
    ] = None,
) -> None:
    """Fail (exit 1, one line naming the metric and its value) when the demo's report falls under a floor;
    `.ci/run` runs it after `make demo`. A video demo's report is held to the video floors."""
    from unimm.reports.gate import check_report

    given = {"caption accuracy": caption, "generated accuracy": generated, "per-frame prompt accuracy": frame_prompt,
             "motion accuracy": motion, "direction QA accuracy": direction}  # fmt: skip
    passed, message = check_report(report, {k: v for k, v in given.items() if v is not None})
    if not passed:
        typer.secho(message, fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(message)


def _eval_video(model, run: Path, suite: str, seed: int, out: Path | None, data: Path | None) -> None:
    """``unimm eval`` of a video model: eval/video.py's metrics -> eval.json, eval.md, samples.gif, strips.png."""
    import time

    from unimm.eval.video import evaluate_video
    from unimm.eval.video_report import write_video_eval
    from unimm.provenance import command_line, provenance

    t0 = time.perf_counter()
    result = evaluate_video(model, suite, seed=seed, data_path=data, progress=True)
    result["provenance"] = provenance(run / "config.toml", {"evaluate": round(time.perf_counter() - t0, 2)},
                                      command_line())  # fmt: skip
    paths = write_video_eval(result, out or run / "eval", title=f"{model.cfg.name} ({run})")
    u, g = result["understanding"], result["generation"]
    head = {k: g[k] for k in ("frame_prompt_accuracy", "same_class_every_frame", "motion_accuracy")}
    head.update(
        {k: u[k] for k in ("caption_exact_match", "vqa_accuracy", "direction_vqa_accuracy") if u[k] is not None}
    )
    typer.echo(" ".join(f"{k}={v:.4g}" for k, v in head.items()))
    typer.echo(f"wrote {paths['json']}, {paths['md']} and {paths['gif']}")


def _eval_edits(
    model, run: Path, suite: str, seed: int, out: Path | None, data: Path | None, split: str = "test"
) -> None:
    """``unimm eval`` on an edit dataset: eval/editing.py's exact scores -> eval.json, eval.md, edits.png."""
    import time

    from unimm.eval.editing import evaluate_edits
    from unimm.eval.editing_report import write_editing_eval
    from unimm.provenance import command_line, provenance

    t0 = time.perf_counter()
    result = evaluate_edits(model, suite, seed=seed, data_path=data, progress=True, split=split)
    wall = {"evaluate": round(time.perf_counter() - t0, 2)}
    result["provenance"] = provenance(run / "config.toml", wall, command_line())
    paths = write_editing_eval(result, out or run / "eval", title=f"{model.cfg.name} ({run})")
    e = result["editing"]
    typer.echo(" ".join(f"{k}={e[k]['rate']:.4g}" for k in ("edit", "preservation", "both")))
    typer.echo(f"wrote {paths['json']}, {paths['md']} and {paths['png']}")


def _eval_interleaved(model, run: Path, suite: str, seed: int, out: Path | None, data: Path | None) -> None:
    """``unimm eval --suite interleaved``: eval/interleaving.py's exact slot scores -> eval.json, eval.md,
    interleaved.png."""
    import time

    from unimm.eval.interleaving import evaluate_interleaved
    from unimm.eval.interleaving_report import write_interleaved_eval
    from unimm.provenance import command_line, provenance

    t0 = time.perf_counter()
    result = evaluate_interleaved(model, suite, seed=seed, data_path=data, progress=True)
    wall = {"evaluate": round(time.perf_counter() - t0, 2)}
    result["provenance"] = provenance(run / "config.toml", wall, command_line())
    paths = write_interleaved_eval(result, out or run / "eval", title=f"{model.cfg.name} ({run})")
    r = result["interleaved"]
    rates = {k: r[k]["rate"] for k in ("slot_accuracy", "task_accuracy", "consistency") if r[k]["rate"] is not None}
    typer.echo(" ".join(f"{k}={v:.4g}" for k, v in rates.items()))
    typer.echo(f"wrote {paths['json']} and {paths['md']}")


@app.command("eval")
def eval_(
    run: Annotated[Path, typer.Argument(help="run directory (or save_pretrained directory)")],
    suite: Annotated[str, typer.Option(help=SUITE_NAMES)] = "quick",
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path | None, typer.Option(help="output directory (default: RUN/eval)")] = None,
    data: Annotated[Path | None, typer.Option(help="dataset to evaluate on (default: the run's data.path)")] = None,
    inception: Annotated[Path | None, typer.Option(help="local InceptionV3 FID weights (needs torch-fidelity)")] = None,
    sample: Annotated[
        list[str] | None,
        typer.Option("--sample", help="sampling setting KEY=VALUE for this evaluation (repeatable), e.g. cfg=2"),
    ] = None,
    split: Annotated[
        str, typer.Option(help="edit datasets: 'test' (the report's), or 'val' to choose sampling settings on")
    ] = "test",
) -> None:
    """Evaluate a run: understanding, generation and cost metrics -> eval.json, eval.md, sample grids (on an edit
    dataset: edit accuracy and preservation -> eval.json, eval.md, edits.png; --suite interleaved: slot accuracy
    and consistency of interleaved text-and-image replies -> eval.json, eval.md, interleaved.png)."""
    import time

    from unimm.cli_checks import check_out_dir
    from unimm.config import with_sampling
    from unimm.data.edit_store import is_edit_dataset
    from unimm.eval.harness import evaluate
    from unimm.eval.report import write_eval
    from unimm.eval.suites import suite_by_name
    from unimm.models import UnifiedModel
    from unimm.provenance import command_line, provenance

    try:
        suite_by_name(suite)
        check_out_dir(out or run / "eval")
        model = UnifiedModel.from_pretrained(run)
        with_sampling(model.cfg, sample or [])  # recorded in the provenance's command line
        if split != "test" and (suite == "interleaved" or not is_edit_dataset(data or model.cfg.data.path)):
            raise ValueError(f"--split {split}: only the evaluation of an edit dataset takes another split")
        if model.cfg.data.frames is not None:  # a run trained on clips: its own metrics (docs/video.md)
            return _eval_video(model, run, suite, seed, out, data)
        if suite == "interleaved":  # text and images in slots, scored exactly (docs/chat.md)
            return _eval_interleaved(model, run, suite, seed, out, data)
        if is_edit_dataset(data or model.cfg.data.path):  # edit triples: exact edit scores (docs/editing.md)
            return _eval_edits(model, run, suite, seed, out, data, split)
        t0 = time.perf_counter()
        result = evaluate(
            model, suite, seed=seed, data_path=data, run_dir=run, progress=True, inception_weights=inception
        )
        wall = {"evaluate": round(time.perf_counter() - t0, 2)}
        result["provenance"] = provenance(run / "config.toml", wall, command_line())
    except (FileNotFoundError, ModuleNotFoundError, ValueError, NotImplementedError) as err:
        _fail(err)
    paths = write_eval(result, out or run / "eval", title=f"{model.cfg.name} ({run})")
    u, g = result["understanding"], result["generation"]
    head = {
        k: u[k] for k in ("caption_accuracy", "rank_accuracy", "exact_match", "vqa_accuracy") if u.get(k) is not None
    }
    head.update(
        {k: g[k] for k in ("prompt_accuracy", "fid", "clip_score", "heldout_image_loss") if g.get(k) is not None}
    )
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
    plan: Annotated[
        bool, typer.Option(help="print every run, the FLOPs it computes and its hours; run nothing")
    ] = False,
    rate: Annotated[
        float, typer.Option(help="--plan: the sustained GFLOP/s per job assumed for the hours", min=1e-3)
    ] = 35.0,
    only: Annotated[
        list[str],
        typer.Option(metavar="NAME", help="only these strategies (repeatable or comma-separated): a column of its own"),
    ] = [],
) -> None:
    """Decision atlas: train every strategy to the same budget, evaluate, and report what the numbers show."""
    from unimm.atlas import load_atlas, plan_runs, run_atlas
    from unimm.atlas.estimate import plan_text, run_costs
    from unimm.cli_checks import check_out_dir
    from unimm.config import ConfigError

    names = [name for item in only for name in item.split(",") if name]

    def load():
        atlas_cfg = load_atlas(config)
        return atlas_cfg.only(names) if names else atlas_cfg

    if plan:
        try:
            atlas_cfg = load()
            typer.echo(plan_text(atlas_cfg, run_costs(atlas_cfg, plan_runs(atlas_cfg)), rate))
        except (ConfigError, ValueError) as err:
            _fail(err)
        return
    try:
        check_out_dir(out)
        outcomes, report = run_atlas(load(), out, jobs=jobs, report_only=report_only)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(f"report: {report} and {report.with_suffix('.html')}")
    failed = [o.name for o in outcomes if o.status == "failed"]
    if failed:
        typer.secho(f"{len(failed)} run(s) failed: {', '.join(failed)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@app.command()
def reports(
    only: Annotated[
        list[str], typer.Option(metavar="TARGET", help="run only this target (repeatable): demo, chameleon, ...")
    ] = [],
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


config_app = App(help="Configs: convert old ones, list the part kinds.")
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


tokenizer_app = App(help="Image tokenizers (VQ-VAE, KL-VAE).")
app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("train")
def tokenizer_train(
    config: Annotated[Path, typer.Argument(help="TOML preset, e.g. configs/tok/vq.toml")],
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/tokenizer"),
    set_: SetOption = [],
) -> None:
    """Train an image tokenizer; writes tokenizer.safetensors, config.toml, metrics.json and ledger.json (its FLOPs)."""
    from unimm.cli_checks import check_out_dir
    from unimm.config import ConfigError, TokenizerConfig, load_config
    from unimm.tokenizers.train import train_tokenizer

    try:
        check_out_dir(out)
        result = train_tokenizer(load_config(config, set_, schema=TokenizerConfig), out)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        _fail(err)
    val = result["val"]
    extra = f", code usage {val['usage']:.2f}, perplexity {val['perplexity']:.1f}" if "usage" in val else ""
    typer.echo(f"{out}: val PSNR {val['psnr']:.2f} dB (MSE {val['mse']:.4f}){extra}")
    if "edit_ceiling" in result:
        c = result["edit_ceiling"]
        typer.echo(
            f"edit ceiling on {c['test_edits']} test edits: edit {c['edit']['rate']:.1%}, preservation "
            f"{c['preservation']['rate']:.1%}, both {c['both']['rate']:.1%}, pixel distance {c['pixel_distance']:.2f}"
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
