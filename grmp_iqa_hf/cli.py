"""The `grmp-iqa` command line: `score`, `evaluate`, `push`, `push-dataset`, `quickstart`, `convert-official`.

Exit status: 0 success, 1 when some input could not be read (or the Hub failed a push), 2 on usage errors
(including inputs that are wrong as a whole: a model that cannot be found or loaded, an unavailable device,
bad dataset metadata).

Arguments are parsed and checked before torch or transformers is imported (each command imports what it
needs), so `--help`, `--version` and a wrong `--model` answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2

#: `--dataset` of `evaluate`: the formats of grmp_iqa_hf.data.SUPPORTED_FORMATS, listed here because importing
#: the data package costs seconds (tests/test_cli.py checks that the two agree).
DATASET_FORMATS = ("imagefolder", "livec", "koniq10k", "kadid10k", "tid2013", "csiq", "live", "spaq", "pyiqa")
DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_BASE = "openai/clip-vit-base-patch16"
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


# ---------------------------------------------------------------------------------------------- helpers


def _print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


@contextlib.contextmanager
def _quiet(enabled: bool):
    """With `--quiet`: no progress bars (ours, transformers' "Loading weights" / "Writing model shards",
    huggingface_hub's downloads and uploads) and no library chatter below errors. The environment variables
    reach libraries imported later; libraries already imported are switched directly, and restored after."""
    if not enabled:
        yield
        return
    import logging

    names = ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")
    saved_env = {name: os.environ.get(name) for name in names}
    os.environ.update(HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error")
    ours = logging.getLogger("grmp_iqa_hf")  # our own warnings (e.g. a push without tokenizer files)
    restore = [lambda level=ours.level: ours.setLevel(level)]
    ours.setLevel(logging.ERROR)
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
        from huggingface_hub.utils import logging as hub_logging

        if not are_progress_bars_disabled():
            disable_progress_bars()
            restore.append(enable_progress_bars)
        restore.append(lambda level=hub_logging.get_verbosity(): hub_logging.set_verbosity(level))
        hub_logging.set_verbosity_error()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            restore.append(hf_logging.enable_progress_bar)
        restore.append(lambda level=hf_logging.get_verbosity(): hf_logging.set_verbosity(level))
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _device(args) -> str:
    """The torch device for `--device`; an unavailable one is a usage error (exit 2, the subcommand's usage)."""
    import torch

    name = args.device
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        args.parser.error(f"--device cuda: CUDA is not available to torch {torch.__version__} here "
                          "(use --device cpu, or auto)")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        args.parser.error("--device mps: Apple's Metal (MPS) backend is not available here (use --device cpu, or auto)")
    return name


def _resolve_model(name, revision=None, what: str = "model"):
    """Check a --model (or --backbone) and its revision before anything heavy is imported; None (after printing
    why) when it is neither a model folder, the built-in tiny-random, nor a Hub model that can be found."""
    from .provenance import ModelNotFoundError, resolve_model_source

    try:
        return resolve_model_source(name, revision, what=what)
    except ModelNotFoundError as err:
        _print_error(str(err))
        return None


def _load_model(args, source, device):
    """The model named by --model/--revision/--trust-remote-code on `device`, or None after printing why not."""
    from .models import load_model

    try:
        return load_model(args.model, device=device, revision=args.revision,
                          trust_remote_code=args.trust_remote_code, source=source)
    except (OSError, ValueError) as err:
        _print_error(f"cannot load model {args.model!r}: {err}")
        return None


def _prepare_model(args):
    """--model, then --device, then the weights: the cheap checks first."""
    source = _resolve_model(args.model, args.revision)
    if source is None:
        return None
    return _load_model(args, source, _device(args))


# --------------------------------------------------------------------------------------------- commands


def cmd_score(args) -> int:
    from .scoring import find_images, format_table, sidecar_path, write_rows

    if args.output and not args.output.lower().endswith((".csv", ".json")):
        args.parser.error(f"--output must end in .csv or .json, got {args.output!r}")
    files = find_images(args.paths)
    if not files:
        _print_error(f"no image files found in {' '.join(args.paths)}")
        return EXIT_USAGE
    model = _prepare_model(args)
    if model is None:
        return EXIT_USAGE
    from . import provenance
    from .scoring import score_files

    rows = score_files(model, files, batch_size=args.batch_size, num_workers=args.num_workers,
                       progress=not args.quiet)
    record = provenance.collect(model)
    if args.output:
        write_rows(rows, args.output, provenance=record)
    else:
        print(format_table(rows))
    failed = [r for r in rows if r.error]
    if failed or not args.quiet:  # quiet silences progress and success, never failures
        summary = f"scored {len(rows) - len(failed)} of {len(rows)} files"
        if args.output:
            summary += f"; wrote {args.output}"
            if args.output.lower().endswith(".csv"):
                summary += f" (provenance in {sidecar_path(args.output)})"
        print(summary, file=sys.stderr)
    for row in failed:
        print(f"  could not read {row.path}: {row.error}", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _metric(value) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def evaluation_summary(report: dict) -> str:
    """The lines `grmp-iqa evaluate` prints on stdout."""
    line = (f"{report['dataset_name'] or report['dataset']}: n={report['n']}  SRCC={_metric(report['srcc'])}  "
            f"PLCC={_metric(report['plcc'])}  PLCC(logistic)={_metric(report['plcc_logistic'])}  "
            f"KRCC={_metric(report['krcc'])}  RMSE={_metric(report['rmse'])}")
    fit = report.get("plcc_logistic_fit")
    if fit not in (None, "ok"):
        reason = report.get("plcc_logistic_fit_reason") or "no reason given"
        line += f"\n  logistic fit {fit}: {reason}; PLCC(logistic) and RMSE are not reported"
    return line


def cmd_evaluate(args) -> int:
    if args.output and not args.output.lower().endswith(".json"):
        args.parser.error(f"--output must be a .json file, got {args.output!r}")
    if args.plot and not args.plot.lower().endswith(PLOT_SUFFIXES):
        args.parser.error(f"--plot must end in one of {', '.join(PLOT_SUFFIXES)}, got {args.plot!r}")
    if not os.path.isdir(args.data_dir):
        args.parser.error(f"--data-dir {args.data_dir!r}: no such folder")
    from .data import DatasetMetadataError
    from .evaluation.evaluate import evaluate_model, load_evaluation_data, write_report

    # the dataset is checked before the model is loaded: a bad --dataset or bad metadata fails at once
    try:
        data = load_evaluation_data(args.data_dir, args.dataset, normalize=args.normalize,
                                    **({"facts": args.facts} if args.facts else {}))
    except DatasetMetadataError as err:  # already names every bad row
        _print_error(str(err))
        return EXIT_USAGE
    except (OSError, ValueError) as err:
        _print_error(f"cannot load dataset {args.dataset!r} from {args.data_dir}: {err}")
        return EXIT_USAGE
    model = _prepare_model(args)
    if model is None:
        return EXIT_USAGE
    report = evaluate_model(model, args.data_dir, dataset=args.dataset, batch_size=args.batch_size,
                            num_workers=args.num_workers, progress=not args.quiet, normalize=args.normalize,
                            data=data)
    report["model"] = args.model
    write_report(report, args.output, plot=args.plot)
    print(evaluation_summary(report))
    written = [path for path in (args.output, args.plot) if path]
    if written and not args.quiet:
        print(f"wrote {' and '.join(written)}", file=sys.stderr)
    for failure in report["failed"]:
        print(f"  could not read {failure['path']}: {failure['error']}", file=sys.stderr)
    return EXIT_SOME_FAILED if report["failed"] else EXIT_OK


def _push(push, source, repo_id, **options):
    """Run `push(source, repo_id, **options)`: `(commit, exit status)`, the error printed when it failed."""
    from .data import DatasetMetadataError
    from .hub.push import HubRequestError

    try:
        return push(source, repo_id, **options), EXIT_OK
    except HubRequestError as err:  # the Hub failed or refused: the inputs may be fine
        print(f"error: {err}", file=sys.stderr)
        return None, EXIT_SOME_FAILED
    except DatasetMetadataError as err:  # already names every bad row
        print(f"error: {err}", file=sys.stderr)
        return None, EXIT_USAGE
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: cannot push {source} to {repo_id}: {err}", file=sys.stderr)
        return None, EXIT_USAGE


def cmd_push(args) -> int:
    from .hub import push_model

    commit, status = _push(push_model, args.model_dir, args.repo_id, report=args.report, private=args.private,
                           revision=args.revision, adapter_only=args.adapter_only, base_model=args.base_model,
                           commit_message=args.commit_message, license=args.license, datasets=args.dataset_id)
    if commit is not None:
        print(f"pushed {args.model_dir} to {commit.repo_url.repo_id}@{commit.oid[:12]}"
              f"{f' (branch {args.revision})' if args.revision else ''}: {commit.commit_url}")
    return status


def cmd_push_dataset(args) -> int:
    from .hub import push_dataset

    commit, status = _push(push_dataset, args.data_dir, args.repo_id, dataset=args.dataset, private=args.private,
                           license=args.license, commit_message=args.commit_message)
    if commit is not None:
        print(f"pushed {args.data_dir} to datasets/{commit.repo_url.repo_id}@{commit.oid[:12]}: {commit.commit_url}")
    return status


def cmd_quickstart(args) -> int:
    if _resolve_model(args.backbone, what="backbone") is None:
        return EXIT_USAGE
    device = _device(args)
    from .quickstart import run_quickstart

    run_quickstart(output_dir=args.output_dir, backbone=args.backbone, seed=args.seed, epochs=args.epochs,
                   meta_steps=args.meta_steps, device=device, quiet=args.quiet)
    return EXIT_OK


def cmd_convert_official(args) -> int:
    if not os.path.exists(args.checkpoint):
        args.parser.error(f"CHECKPOINT {args.checkpoint!r}: no such file")
    from .convert import convert_official_checkpoint

    try:
        convert_official_checkpoint(args.checkpoint, args.output_dir, base=args.base)
    except (OSError, ValueError) as err:  # the converter's errors say which file and what is wrong
        _print_error(str(err))
        return EXIT_USAGE
    if not args.quiet:
        print(f"converted {args.checkpoint} -> {args.output_dir} (load it with "
              f"GRMPIQAModel.from_pretrained({str(args.output_dir)!r}) or grmp-iqa score --model {args.output_dir})")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows `(default: ...)` for options whose default means something (not None, not False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _VersionAction(argparse.Action):
    """`--version`: the package, torch and transformers versions, read without importing them."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print the versions of grmp-iqa-hf, torch, transformers and Python, and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from . import __version__
        from .provenance import version_of

        print(f"grmp-iqa {__version__} (torch {version_of('torch')}, transformers {version_of('transformers')}, "
              f"huggingface_hub {version_of('huggingface_hub')}, Python {sys.version.split()[0]})")
        parser.exit()


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grmp-iqa", formatter_class=_HelpFormatter,
        description="Blind image quality assessment with prompt-learned CLIP (GRMP-IQA, MP-IQE).",
        epilog="Exit status: 0 success, 1 some inputs could not be read (or the Hub failed a push), 2 usage errors. "
               "`grmp-iqa COMMAND --help` describes each command.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help, parents=()):
        p = sub.add_parser(name, parents=list(parents), help=help, description=help, formatter_class=_HelpFormatter)
        p.set_defaults(func=func, parser=p)
        return p

    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", "-q", action="store_true",
                       help="no progress bars and no messages except results and errors")
    model_options = argparse.ArgumentParser(add_help=False)
    model_options.add_argument("--model", required=True,
                               help="a model folder (written by save_pretrained) or a Hub id ORG/NAME")
    model_options.add_argument("--revision", default=None, help="Hub revision of --model: branch, tag or commit")
    model_options.add_argument("--batch-size", type=_int_at_least(1), default=32, help="images per forward pass")
    model_options.add_argument("--num-workers", type=_int_at_least(0), default=2, help="image decoding threads")
    model_options.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when available, else cpu")
    model_options.add_argument("--trust-remote-code", action="store_true",
                               help="allow a checkpoint's own Python code to run (not needed for this package's models)")

    score = command("score", cmd_score, "score image files and folders (recursively)", (model_options, quiet))
    score.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    score.add_argument("--output", default=None,
                       help="scores.csv (provenance in scores.csv.json next to it) or scores.json (provenance inside); "
                            "default: a table on stdout")

    evaluate = command("evaluate", cmd_evaluate, "score a labelled dataset and report SRCC/PLCC/KRCC/RMSE",
                       (model_options, quiet))
    evaluate.add_argument("--data-dir", required=True, help="the dataset's folder")
    evaluate.add_argument("--dataset", choices=DATASET_FORMATS, default="imagefolder",
                          help="the folder's format (imagefolder: images + metadata.csv)")
    evaluate.add_argument("--facts", default=None, metavar="NAME",
                          help="registry dataset (livec, koniq10k, csiq, ...) whose score range and direction apply to "
                               "an imagefolder / pyiqa folder, e.g. for --normalize")
    evaluate.add_argument("--normalize", action="store_true",
                          help="map the scores to [0, 1], higher = better (DMOS flipped, the dataset's nominal range) "
                               "before the metrics")
    evaluate.add_argument("--output", default=None, help="report.json (default: only the summary on stdout)")
    evaluate.add_argument("--plot", default=None, help="scatter.png: prediction vs MOS with the logistic fit")

    push = command("push", cmd_push, "push a saved model to the Hugging Face Hub with a generated model card", (quiet,))
    push.add_argument("model_dir", metavar="MODEL_DIR", help="a directory written by save_pretrained")
    push.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub (HF_ENDPOINT / HF_TOKEN are honoured)")
    push.add_argument("--report", default=None,
                      help="report.json of `grmp-iqa evaluate` or of a few-shot / MP-IQE run: the card's results")
    push.add_argument("--private", action="store_true", default=None, help="create the repository private")
    push.add_argument("--revision", default=None, help="branch to push to (created when missing)")
    push.add_argument("--adapter-only", action="store_true",
                      help="push only the prompts (and fine-tuned blocks): tensors that differ from the base CLIP")
    push.add_argument("--base-model", default=None,
                      help="with --adapter-only: the base CLIP's Hub id to record (default: the one in the config)")
    push.add_argument("--license", default="apache-2.0", help="licence of the weights for the card")
    push.add_argument("--dataset-id", action="append", default=None,
                      help="Hub dataset id (ORG/NAME) for the card's `datasets` (repeatable; default: none, since the "
                           "report's dataset key is a loader name, not a Hub id)")
    push.add_argument("--commit-message", default=None)

    push_data = command("push-dataset", cmd_push_dataset,
                        "push an IQA image folder (metadata.csv) as a Hub dataset with a card", (quiet,))
    push_data.add_argument("data_dir", metavar="DATA_DIR", help="image folder with metadata.csv (file_name, mos, ...)")
    push_data.add_argument("--repo-id", required=True, help="ORG/NAME of the dataset repository")
    push_data.add_argument("--dataset", default="imagefolder",
                           help="registry key whose facts fill the card (livec, koniq10k, ...); imagefolder: none")
    push_data.add_argument("--private", action="store_true", default=None)
    push_data.add_argument("--license", default=None, help="licence id for the card (default: other)")
    push_data.add_argument("--commit-message", default=None)

    quick = command("quickstart", cmd_quickstart, "the whole pipeline offline on an embedded default, in minutes",
                    (quiet,))
    quick.add_argument("--output-dir", required=True)
    quick.add_argument("--backbone", default="tiny-random", help="'tiny-random' or a CLIP Hub id / directory")
    quick.add_argument("--seed", type=int, default=0)
    quick.add_argument("--meta-steps", type=_int_at_least(0), default=None,
                       help="meta-pre-training steps (default: 30 for tiny-random, else 100)")
    quick.add_argument("--epochs", type=_int_at_least(1), default=None,
                       help="QGR fine-tuning epochs (default: 30 for tiny-random, else 100)")
    quick.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when available, else cpu")

    convert = command("convert-official", cmd_convert_official,
                      "convert a checkpoint of the released GRMP-IQA code into a model folder (save_pretrained)",
                      (quiet,))
    convert.add_argument("checkpoint", metavar="CHECKPOINT", help="the released code's checkpoint file")
    convert.add_argument("--output-dir", required=True, help="where to write the converted model")
    convert.add_argument("--base", default=DEFAULT_BASE, help="the CLIP the checkpoint was trained on: Hub id or folder")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with _quiet(args.quiet):
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
