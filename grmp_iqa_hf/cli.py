"""The `grmp-iqa` command line: `score`, `evaluate`, `push`, `push-dataset`, `export`, `serve`, `quickstart`,
`convert-official`.

Exit status: 0 success, 1 when some input could not be read (or the Hub failed a push), 2 on usage errors
(including inputs that are wrong as a whole: a model that cannot be found or loaded, an unavailable device,
bad dataset metadata).

`score` and `evaluate` read image files / folders or a Hub dataset's split (`--hub-dataset`, see
`grmp_iqa_hf.data.hub_dataset`).

Arguments are parsed and checked before torch or transformers is imported (each command imports what it
needs), so `--help`, `--version` and a wrong `--model` answer at once.
"""

from __future__ import annotations

import argparse
import sys

from .commands import (
    _quiet, cmd_convert_official, cmd_evaluate, cmd_export, cmd_push, cmd_push_dataset, cmd_quickstart, cmd_score,
    cmd_serve,
)

#: `--dataset` of `evaluate`: the formats of grmp_iqa_hf.data.SUPPORTED_FORMATS, listed here because importing
#: the data package costs seconds (tests/test_cli.py checks that the two agree).
DATASET_FORMATS = ("imagefolder", "livec", "koniq10k", "kadid10k", "tid2013", "csiq", "live", "spaq", "pyiqa")
DEVICES = ("auto", "cpu", "cuda", "mps")
#: `--dtype`: the names of modeling.prediction.DTYPES (listed here: the CLI parses before importing torch).
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_BASE = "openai/clip-vit-base-patch16"


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
    model_options.add_argument("--num-workers", type=_int_at_least(0), default=2,
                               help="image decoding worker processes (a torch DataLoader, working ahead of the model; "
                                    "0: decode in this process)")
    model_options.add_argument("--dtype", choices=DTYPES, default="float32",
                               help="load the weights and run in this precision (bfloat16 / float16 halve the memory; "
                                    "float16 is meant for GPUs)")
    model_options.add_argument("--crops", type=_int_at_least(1), default=1,
                               help="score each image as the mean over N deterministic crops (LIQE style: 5 = the "
                                    "corners and the centre); costs about N times one crop")
    model_options.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when available, else cpu")
    model_options.add_argument("--trust-remote-code", action="store_true",
                               help="allow a checkpoint's own Python code to run (not needed for this package's models)")

    hub_data = argparse.ArgumentParser(add_help=False)
    hub_data.add_argument("--hub-dataset", default=None, metavar="ORG/NAME",
                          help="a Hub dataset (datasets.load_dataset; HF_HOME cache, HF_HUB_OFFLINE honoured)")
    hub_data.add_argument("--split", default=None,
                          help="with --hub-dataset: the split (default: the only one, else test)")
    hub_data.add_argument("--image-column", default="image", help="with --hub-dataset: the images' column")
    hub_data.add_argument("--dataset-revision", default=None, help="with --hub-dataset: branch, tag or commit")
    hub_data.add_argument("--dataset-config", default=None, help="with --hub-dataset: the configuration (subset)")
    hub_data.add_argument("--streaming", action=argparse.BooleanOptionalAction, default=None,
                          help="with --hub-dataset: stream the split instead of downloading it into the cache "
                               "(default: stream when its recorded size is over 2 GiB, or unknown while online; "
                               "never with HF_HUB_OFFLINE)")

    score = command("score", cmd_score, "score image files and folders (recursively), or a Hub dataset's rows",
                    (model_options, hub_data, quiet))
    score.add_argument("paths", nargs="*", metavar="PATH", help="image files or folders (or give --hub-dataset)")
    score.add_argument("--output", default=None,
                       help="scores.csv (provenance in scores.csv.json next to it), scores.json (provenance inside) or "
                            "scores.parquet (provenance in the schema metadata, key grmp_iqa); default: a table on "
                            "stdout. Hub rows are named by `row` and the dataset's id column (e.g. file_name)")

    evaluate = command("evaluate", cmd_evaluate, "score a labelled dataset and report SRCC/PLCC/KRCC/RMSE",
                       (model_options, hub_data, quiet))
    evaluate.add_argument("--data-dir", default=None, help="the dataset's folder (or give --hub-dataset)")
    evaluate.add_argument("--mos-column", default="mos", help="with --hub-dataset: the human scores' column")
    evaluate.add_argument("--dataset", choices=DATASET_FORMATS, default="imagefolder",
                          help="with --data-dir: the folder's format (imagefolder: images + metadata.csv)")
    evaluate.add_argument("--facts", default=None, metavar="NAME",
                          help="registry dataset (livec, koniq10k, csiq, ...) whose score range and direction apply to "
                               "an imagefolder / pyiqa folder or a Hub dataset, e.g. for --normalize")
    evaluate.add_argument("--normalize", action="store_true",
                          help="map the scores to [0, 1], higher = better (DMOS flipped, the dataset's nominal range) "
                               "before the metrics")
    evaluate.add_argument("--output", default=None, help="report.json (default: only the summary on stdout)")
    evaluate.add_argument("--plot", default=None, help="scatter.png: prediction vs MOS with the logistic fit")

    serve = command("serve", cmd_serve, "serve a model over HTTP: POST /v1/score, GET /healthz, GET /v1/model, and "
                    "a page at / where you drop photos (needs the [serve] extra)", (quiet,))
    serve.add_argument("--model", required=True, help="a model folder (written by save_pretrained) or a Hub id ORG/NAME")
    serve.add_argument("--revision", default=None, help="Hub revision of --model: branch, tag or commit")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=_int_at_least(0), default=8000, help="TCP port")
    serve.add_argument("--max-batch-size", type=_int_at_least(1), default=32,
                       help="most images scored in one forward pass (concurrent requests are batched together)")
    serve.add_argument("--max-wait-ms", type=float, default=10.0,
                       help="how long the first queued image waits for others to join its batch")
    serve.add_argument("--max-queue", type=_int_at_least(1), default=256,
                       help="images admitted and not yet scored; beyond it requests get 503 with Retry-After")
    serve.add_argument("--max-upload-mb", type=float, default=64.0, help="largest request body (413 beyond)")
    serve.add_argument("--max-pixels", type=_int_at_least(1), default=None,
                       help="largest image in pixels, checked from the header before decoding (a per-image error "
                            "beyond; default: Pillow's decompression-bomb limit, as `score`)")
    serve.add_argument("--timeout-s", type=float, default=60.0, help="longest a request may take (504 beyond)")
    serve.add_argument("--dtype", choices=DTYPES, default="float32", help="precision of the weights and the forward pass")
    serve.add_argument("--crops", type=_int_at_least(1), default=1,
                       help="score each image as the mean over N deterministic crops (costs about N times one)")
    serve.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when available, else cpu")
    serve.add_argument("--trust-remote-code", action="store_true",
                       help="allow a checkpoint's own Python code to run (not needed for this package's models)")

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
    push_data.add_argument("--format", choices=("files", "parquet"), default="files",
                           help="files: the folder's files as they are; parquet: a datasets.Dataset (images embedded, "
                                "mos and the other metadata columns) pushed with Dataset.push_to_hub")
    push_data.add_argument("--split", default="train", help="with --format parquet: the split's name")

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

    export = command("export", cmd_export,
                     "export a model's image path for scoring without torch: ONNX, with the text features baked in "
                     "and the preprocessing recorded next to it", (quiet,))
    export.add_argument("model", metavar="MODEL", help="a saved model's folder or a Hub id ORG/NAME")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="export format")
    export.add_argument("--output", required=True, metavar="PATH",
                        help="the .onnx file to write; preprocessor_config.json goes in its folder, so export each "
                             "model into its own folder")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: the exporter's)")
    export.add_argument("--dynamic-batch", action="store_true",
                        help="make the batch axis dynamic (default: the graph takes exactly --batch-size images)")
    export.add_argument("--batch-size", type=_int_at_least(1), default=1,
                        help="the fixed batch size without --dynamic-batch")
    export.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo",
                        help="torch's exporter: dynamo (torch.export, the supported one) or torchscript (legacy, "
                             "deprecated by torch, much faster to export)")
    export.add_argument("--revision", default=None, help="Hub revision of MODEL: branch, tag or commit")
    export.add_argument("--trust-remote-code", action="store_true",
                        help="allow a checkpoint's own Python code to run (not needed for this package's models)")

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
