"""The `grmp-iqa` command line: `score`, `quickstart` (and more subcommands as the package grows).

Exit status: 0 success, 1 when some input could not be read, 2 on usage errors.
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
