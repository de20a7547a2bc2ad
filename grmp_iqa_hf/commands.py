"""What each `grmp-iqa` subcommand does (`cmd_*`, called with the parsed arguments) and the helpers they share.
The parser and `main` are in `grmp_iqa_hf.cli`.

Each command imports what it needs inside its function, so that parsing, `--help` and a wrong `--model` answer
before torch or transformers is imported.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
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

    names = ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "HF_DATASETS_DISABLE_PROGRESS_BARS",
             "DATASETS_VERBOSITY")
    saved_env = {name: os.environ.get(name) for name in names}
    os.environ.update(HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error",
                      HF_DATASETS_DISABLE_PROGRESS_BARS="1", DATASETS_VERBOSITY="error")  # also --hub-dataset's loading
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
                          trust_remote_code=args.trust_remote_code, source=source, dtype=args.dtype)
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


def _open_hub_dataset(args, mos_column=None):
    """The split named by --hub-dataset / --split / --image-column / ... (and `mos_column`), or None after
    printing why not (repository, split or column not found: the message lists what exists)."""
    from .data.hub_dataset import HubDatasetError, open_hub_dataset

    try:
        return open_hub_dataset(args.hub_dataset, split=args.split, image_column=args.image_column,
                                mos_column=mos_column, revision=args.dataset_revision, streaming=args.streaming,
                                config=args.dataset_config)
    except HubDatasetError as err:
        _print_error(str(err))
    except (OSError, ValueError) as err:  # the Hub or the cache failed in some other way
        _print_error(f"cannot load Hub dataset {args.hub_dataset!r}: {type(err).__name__}: {err}")
    return None


def _check_data_source(args, folder_given: bool, folder_flag: str) -> None:
    if folder_given == bool(args.hub_dataset):
        args.parser.error(f"give either {folder_flag} or --hub-dataset ORG/NAME (one of the two)")


def _report_scores(args, rows, written_note="") -> int:
    from .scoring import format_table

    failed = [r for r in rows if r.error]
    if not args.output:
        print(format_table(rows))
    if failed or not args.quiet:  # quiet silences progress and success, never failures
        summary = f"scored {len(rows) - len(failed)} of {len(rows)} {'rows' if args.hub_dataset else 'files'}"
        if args.output:
            summary += f"; wrote {args.output}{written_note}"
        print(summary, file=sys.stderr)
    for row in failed:
        print(f"  could not read {row.path}: {row.error}", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_score_hub(args) -> int:
    source = _open_hub_dataset(args)
    if source is None:
        return EXIT_USAGE
    model = _prepare_model(args)
    if model is None:
        return EXIT_USAGE
    from . import provenance
    from .data.hub_dataset import load_hub_item
    from .scoring import score_stream, write_rows

    ids: list = []

    def items():
        for row in source.rows():
            ids.append(row["id"])
            label = source.label(row["row"]) if row["id"] is None else f"{source.label(row['row'])} ({row['id']})"
            yield label, (label, row["image"])

    rows = list(score_stream(model, items(), load_hub_item, batch_size=args.batch_size, num_workers=args.num_workers,
                             progress=not args.quiet, total=source.num_rows, crops=args.crops))
    if args.output:
        keys = {"row": list(range(len(rows)))}
        if source.id_column:
            keys[source.id_column] = [None if i is None else str(i) for i in ids]
        record = dict(provenance.collect(model), hub_dataset=source.describe())
        write_rows(rows, args.output, provenance=record, key_columns=keys)
    return _report_scores(args, rows, _sidecar_note(args.output))


def _sidecar_note(output) -> str:
    from .scoring import sidecar_path

    return f" (provenance in {sidecar_path(output)})" if output and output.lower().endswith(".csv") else ""


def cmd_score(args) -> int:
    from .scoring import OUTPUT_SUFFIXES, find_images, write_rows

    if args.output and not args.output.lower().endswith(OUTPUT_SUFFIXES):
        args.parser.error(f"--output must end in .csv, .json or .parquet, got {args.output!r}")
    _check_data_source(args, bool(args.paths), "PATH...")
    if args.hub_dataset:
        return cmd_score_hub(args)
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
                       progress=not args.quiet, crops=args.crops)
    if args.output:
        write_rows(rows, args.output, provenance=provenance.collect(model))
    return _report_scores(args, rows, _sidecar_note(args.output))


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
    _check_data_source(args, bool(args.data_dir), "--data-dir")
    if args.hub_dataset:
        return cmd_evaluate_hub(args)
    if not os.path.isdir(args.data_dir):
        args.parser.error(f"--data-dir {args.data_dir!r}: no such folder")
    from .data import DatasetMetadataError
    from .evaluation.evaluate import evaluate_model, load_evaluation_data

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
                            data=data, crops=args.crops)
    return _finish_evaluation(args, report)


def cmd_evaluate_hub(args) -> int:
    if args.dataset != "imagefolder":
        args.parser.error("--dataset names a folder's format; with --hub-dataset give the dataset's facts with --facts")
    from .data import DatasetMetadataError

    source = _open_hub_dataset(args, mos_column=args.mos_column)
    if source is None:
        return EXIT_USAGE
    from .evaluation.evaluate import evaluate_hub_dataset, load_hub_evaluation_data

    data = None
    try:
        if not source.streaming:  # the labels are checked before the model loads (a stream is read once, later)
            data = load_hub_evaluation_data(source, normalize=args.normalize, facts=args.facts)
    except DatasetMetadataError as err:  # already names every bad row
        _print_error(str(err))
        return EXIT_USAGE
    except (KeyError, ValueError) as err:  # e.g. --normalize without a known score range
        _print_error(f"cannot use Hub dataset {args.hub_dataset!r}: {err}")
        return EXIT_USAGE
    model = _prepare_model(args)
    if model is None:
        return EXIT_USAGE
    try:
        report = evaluate_hub_dataset(model, source, batch_size=args.batch_size, num_workers=args.num_workers,
                                      progress=not args.quiet, normalize=args.normalize, facts=args.facts, data=data,
                                      crops=args.crops)
    except DatasetMetadataError as err:  # a streamed split's labels, checked after the pass
        _print_error(str(err))
        return EXIT_USAGE
    return _finish_evaluation(args, report)


def _finish_evaluation(args, report) -> int:
    from .evaluation.evaluate import write_report

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
                           license=args.license, commit_message=args.commit_message, format=args.format,
                           split=args.split)
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


def cmd_export(args) -> int:
    if args.opset is not None and args.opset < 7:
        args.parser.error(f"--opset must be >= 7, got {args.opset}")
    if not args.output.lower().endswith(".onnx"):
        args.parser.error(f"--output must be a .onnx file, got {args.output!r}")
    if _resolve_model(args.model, args.revision) is None:
        return EXIT_USAGE
    try:
        from .export import export_onnx, preprocessor_config_path

        path = export_onnx(args.model, args.output, opset=args.opset, dynamic_batch=args.dynamic_batch,
                           batch_size=args.batch_size, exporter=args.exporter, revision=args.revision,
                           trust_remote_code=args.trust_remote_code)
    except ImportError as err:  # the [onnx] extra is missing: says what to install
        _print_error(str(err))
        return EXIT_USAGE
    except (OSError, ValueError) as err:  # e.g. another model's preprocessing already in that folder
        _print_error(f"cannot export {args.model!r}: {err}")
        return EXIT_USAGE
    if not args.quiet:
        batch = "dynamic" if args.dynamic_batch else f"fixed to {args.batch_size} image(s)"
        print(f"wrote {path} (batch axis {batch}) and {preprocessor_config_path(path)}")
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


def cmd_serve(args) -> int:
    """Exit status: 0 after a clean shutdown (SIGTERM / SIGINT end the process with that signal's status, as
    uvicorn re-raises it), 1 when the model cannot be loaded, 2 on usage errors (no [serve] extra, bad model)."""
    from .serve import SERVE_EXTRA_HINT, missing_dependencies

    missing = missing_dependencies()
    if missing:
        _print_error(f"grmp-iqa serve needs {', '.join(missing)}: {SERVE_EXTRA_HINT}")
        return EXIT_USAGE
    if args.max_wait_ms < 0 or args.max_upload_mb <= 0 or args.timeout_s <= 0:
        args.parser.error("--max-wait-ms must be >= 0, --max-upload-mb and --timeout-s > 0")
    source = _resolve_model(args.model, args.revision)
    if source is None:
        return EXIT_USAGE
    from .serve import run_server

    return run_server(args.model, host=args.host, port=args.port, max_batch_size=args.max_batch_size,
                      max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, max_upload_mb=args.max_upload_mb,
                      timeout_s=args.timeout_s, max_pixels=args.max_pixels, dtype=args.dtype, crops=args.crops,
                      device=_device(args), revision=args.revision, trust_remote_code=args.trust_remote_code,
                      source=source, log_level="warning" if args.quiet else "info")
