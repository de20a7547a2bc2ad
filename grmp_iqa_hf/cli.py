"""The `grmp-iqa` command line: `score`, `evaluate`, `push`, `push-dataset`, `quickstart`.

Exit status: 0 success, 1 when some input could not be read (or the Hub failed a push), 2 on usage errors
(including inputs that are wrong as a whole: a model that cannot be loaded, bad dataset metadata).
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def _device(name: str | None) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda was asked for but no CUDA device is available")
    return name


def _load_model(args):
    """The model named by --model/--revision/--device/--trust-remote-code, or None after printing why not."""
    from .models import load_model

    try:
        return load_model(args.model, device=_device(args.device), revision=args.revision,
                          trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as err:
        print(f"error: cannot load model {args.model!r}: {err}", file=sys.stderr)
        return None


def cmd_score(args) -> int:
    from .scoring import find_images, format_table, score_files, write_rows

    if args.output and not args.output.lower().endswith((".csv", ".json")):
        print(f"error: --output must end in .csv or .json, got {args.output!r}", file=sys.stderr)
        return EXIT_USAGE
    files = find_images(args.paths)
    if not files:
        print(f"error: no image files found in {' '.join(args.paths)}", file=sys.stderr)
        return EXIT_USAGE
    model = _load_model(args)
    if model is None:
        return EXIT_USAGE
    rows = score_files(model, files, batch_size=args.batch_size, num_workers=args.num_workers,
                       progress=not args.quiet)
    if args.output:
        write_rows(rows, args.output)
    else:
        print(format_table(rows))
    failed = [r for r in rows if r.error]
    summary = f"scored {len(rows) - len(failed)} of {len(rows)} files"
    if args.output:
        summary += f"; wrote {args.output}"
    print(summary, file=sys.stderr)
    for row in failed:
        print(f"  could not read {row.path}: {row.error}", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_evaluate(args) -> int:
    from .data import DatasetMetadataError
    from .evaluation.evaluate import evaluate_model, write_report

    if not args.output.lower().endswith(".json"):
        print(f"error: --output must be a .json file, got {args.output!r}", file=sys.stderr)
        return EXIT_USAGE
    model = _load_model(args)
    if model is None:
        return EXIT_USAGE
    try:
        report = evaluate_model(model, args.data_dir, dataset=args.dataset, batch_size=args.batch_size,
                                progress=not args.quiet)
    except DatasetMetadataError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, ValueError) as err:
        print(f"error: cannot load dataset {args.dataset!r} from {args.data_dir}: {err}", file=sys.stderr)
        return EXIT_USAGE
    report["model"] = args.model
    write_report(report, args.output, plot=args.plot)
    print(f"{report['dataset_name'] or report['dataset']}: n={report['n']}  SRCC={report['srcc']:.4f}  "
          f"PLCC={report['plcc']:.4f}  PLCC(logistic)={report['plcc_logistic']:.4f}  KRCC={report['krcc']:.4f}  "
          f"RMSE={report['rmse']:.4f}")
    print(f"wrote {args.output}" + (f" and {args.plot}" if args.plot else ""), file=sys.stderr)
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
    from .quickstart import run_quickstart

    run_quickstart(output_dir=args.output_dir, backbone=args.backbone, seed=args.seed, epochs=args.epochs,
                   meta_steps=args.meta_steps, device=_device(args.device))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grmp-iqa", description="Blind image quality assessment with prompt-learned CLIP.")
    sub = parser.add_subparsers(dest="command", required=True)
    model_options = argparse.ArgumentParser(add_help=False)
    model_options.add_argument("--model", required=True, help="model directory or Hub id")
    model_options.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    model_options.add_argument("--batch-size", type=int, default=32)
    model_options.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    model_options.add_argument("--trust-remote-code", action="store_true",
                               help="allow a checkpoint's own Python code to run (not needed for this package's models)")
    model_options.add_argument("--quiet", action="store_true", help="no progress bar")

    score = sub.add_parser("score", parents=[model_options], help="score image files and folders (recursively)")
    score.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    score.add_argument("--num-workers", type=int, default=2, help="image decoding threads")
    score.add_argument("--output", default=None, help="out.csv or out.json (default: a table on stdout)")
    score.set_defaults(func=cmd_score)

    evaluate = sub.add_parser("evaluate", parents=[model_options],
                              help="score a labelled dataset and report SRCC/PLCC/KRCC/RMSE")
    evaluate.add_argument("--data-dir", required=True, help="the dataset's folder")
    evaluate.add_argument("--dataset", default="imagefolder",
                          help="imagefolder (metadata.csv), livec, koniq10k, kadid10k, tid2013, csiq, live, spaq, pyiqa")
    evaluate.add_argument("--output", required=True, help="report.json")
    evaluate.add_argument("--plot", default=None, help="scatter.png: prediction vs MOS with the logistic fit")
    evaluate.set_defaults(func=cmd_evaluate)

    push = sub.add_parser("push", help="push a saved model to the Hugging Face Hub with a generated model card")
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
    push.add_argument("--license", default="apache-2.0", help="licence of the weights for the card (default apache-2.0)")
    push.add_argument("--dataset-id", action="append", default=None,
                      help="Hub dataset id for the card's `datasets` (repeatable; default: the report's dataset)")
    push.add_argument("--commit-message", default=None)
    push.set_defaults(func=cmd_push)

    push_data = sub.add_parser("push-dataset", help="push an IQA image folder (metadata.csv) as a Hub dataset with a card")
    push_data.add_argument("data_dir", metavar="DATA_DIR", help="image folder with metadata.csv (file_name, mos, ...)")
    push_data.add_argument("--repo-id", required=True, help="ORG/NAME of the dataset repository")
    push_data.add_argument("--dataset", default="imagefolder",
                           help="registry key whose facts fill the card (livec, koniq10k, ...), default none")
    push_data.add_argument("--private", action="store_true", default=None)
    push_data.add_argument("--license", default=None, help="licence id for the card (default: other)")
    push_data.add_argument("--commit-message", default=None)
    push_data.set_defaults(func=cmd_push_dataset)

    quick = sub.add_parser("quickstart", help="the whole pipeline offline on an embedded default, in minutes")
    quick.add_argument("--output-dir", required=True)
    quick.add_argument("--backbone", default="tiny-random", help="'tiny-random' or a CLIP Hub id / directory")
    quick.add_argument("--seed", type=int, default=0)
    quick.add_argument("--meta-steps", type=int, default=None, help="meta-pre-training steps (default: per backbone)")
    quick.add_argument("--epochs", type=int, default=None, help="QGR fine-tuning epochs (default: per backbone)")
    quick.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    quick.set_defaults(func=cmd_quickstart)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size must be >= 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
