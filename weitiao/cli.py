"""Command line: `weitiao train | eval | predict | chat | export | distill | tune | report | runs | compare | ui | serve`. Thin: parse, then call the module that works.

Heavy libraries are imported inside the commands, so `weitiao --help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from weitiao.errors import TrainingStopped, UserError


class _OneLineParser(argparse.ArgumentParser):
    """argparse's mistakes as weitiao's: one `error:` line with a fix, exit code 2 (not a usage block)."""

    def error(self, message: str):
        if self.prog == "weitiao" and "COMMAND" in message:  # `weitiao` alone: the list of commands is the answer
            self.print_usage(sys.stderr)
        sys.stderr.write(f"error: {self.prog}: {message}; fix: see `{self.prog} --help`\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="weitiao", description="Fine-tune pretrained models from one YAML file.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_OneLineParser)

    tr = sub.add_parser("train", help="fine-tune as a config says and write a run folder")
    tr.add_argument("config", help="YAML config (see examples/)")
    tr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set training.lr=3e-5 (repeatable)")
    tr.add_argument("--name", help="run folder name under output.dir (default: config name + time)")
    tr.add_argument("--overwrite", action="store_true", help="replace an existing run folder of that name")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last complete checkpoint ('auto': the run named by --name, else the newest)")
    tr.add_argument("--force", action="store_true", help="with --resume: continue even if the config or data changed")

    ev = sub.add_parser("eval", help="metrics of a trained run on any labelled file")
    ev.add_argument("run_dir")
    ev.add_argument("--data", help="labelled file with the run's columns (text and label; words and tags); "
                    "default: the run's own validation data")
    ev.add_argument("--output", help="write the metrics as JSON here too")
    ev.add_argument("--batch-size", type=int, help="examples scored at once (default: training.eval_batch_size)")
    _trust_option(ev)

    pr = sub.add_parser("predict", help="the task's prediction for new texts (labels and probabilities; entities)")
    pr.add_argument("run_dir")
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", nargs="+", help="one or more texts")
    src.add_argument("--image", nargs="+", help="one or more image files (image classification runs)")
    src.add_argument("--prompt", nargs="+", help="causal LM runs: one or more prompts to answer (or texts to continue)")
    src.add_argument("--file", help="a data file with the run's text column (token classification: words, e.g. CoNLL)")
    pr.add_argument("--output", help="write predictions here (.jsonl or .csv); default: print JSON lines")
    pr.add_argument("--batch-size", type=int, help="texts scored at once (default: training.eval_batch_size)")
    _generation_options(pr)
    _trust_option(pr)

    ch = sub.add_parser("chat", help="talk with a causal LM run (the conversation is kept; /reset, /exit)")
    ch.add_argument("run_dir")
    _generation_options(ch)
    _trust_option(ch)

    ex = sub.add_parser("export", help="write a run's model as hf, adapter, onnx, onnx-int8 or pt2 (torch.export), with a parity check")
    ex.add_argument("run_dir")
    ex.add_argument("--format", default="hf", metavar="FORMAT",
                    help="hf (merged safetensors, default), adapter (PEFT), onnx (fp32), onnx-int8, pt2 (torch.export)")
    ex.add_argument("--out", help="the folder to write (default: RUN/export/FORMAT; must not exist, unless --overwrite)")
    ex.add_argument("--task", help="multi-task runs: the task whose model to write")
    ex.add_argument("--rows", type=int, default=1000, help="validation rows the parity check scores (default: 1000)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")

    di = sub.add_parser("distill", help="train a smaller student on a teacher run's soft labels (student.yaml: a config, with student: {layers: N})")
    di.add_argument("teacher", help="the teacher's run folder")
    di.add_argument("config", help="the student's YAML config (distill: {temperature, alpha, unlabelled}; student: {layers})")
    di.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")
    di.add_argument("--name", help="run folder name under output.dir")
    di.add_argument("--overwrite", action="store_true", help="replace an existing run folder of that name")

    tu = sub.add_parser("tune", help="search hyperparameters (the config's search: section) with Optuna; output.dir is the search folder")
    tu.add_argument("config", help="a config with a search: section of dotted keys, e.g. training.lr: {low: 1.0e-5, high: 1.0e-3, log: true}")
    tu.add_argument("--trials", type=int, required=True, help="trials in all (a stopped search resumes to this many)")
    tu.add_argument("--jobs", type=int, default=1, help="worker processes running trials at once (default: 1)")
    tu.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")

    rp = sub.add_parser("report", help="write (again) a run's report.html and plots/: also for a run that is training or stopped")
    rp.add_argument("run_dir")

    rs = sub.add_parser("runs", help="a table of the runs in a folder: task, model, strategy, metric, time, date, status")
    rs.add_argument("dir", nargs="?", default="runs", help="the folder of run folders (default: runs)")
    rs.add_argument("--json", action="store_true", help="print the rows as JSON")

    cp = sub.add_parser("compare", help="config and metric differences of runs side by side, their curves in one HTML page")
    cp.add_argument("runs", nargs="+", metavar="RUN")
    cp.add_argument("--out", default="compare.html", help="the HTML page to write (default: compare.html)")

    ui = sub.add_parser("ui", help="a local dashboard: the runs table (live), reports, comparisons, a box to try a model")
    ui.add_argument("--runs", default="runs", help="the folder of run folders (default: runs)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    ui.add_argument("--port", type=int, default=7860, help="port (default: 7860)")

    sv = sub.add_parser("serve", help="serve a run (or an export of it) over HTTP: /v1/predict, /v1/chat/completions, /health")
    sv.add_argument("run_dir")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    sv.add_argument("--backend", choices=("torch", "onnx"), help="torch (default for a run folder) or onnx (exported at start, with its parity check)")
    sv.add_argument("--max-batch", type=int, default=32, help="inputs scored together at most (default: 32)")
    sv.add_argument("--max-wait-ms", type=float, default=0.0,
                    help="how long a batch waits for more requests (default: 0: it takes those that queued while the last batch ran)")
    sv.add_argument("--no-batching", action="store_true", help="score every request alone, as it comes")
    sv.add_argument("--max-inputs", type=int, default=256, help="inputs one request may hold (default: 256)")
    _trust_option(sv)
    return parser


def _trust_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-format", dest="trust", action="append", default=[], metavar="FORMAT",
                   help="open an export in a format whose files can run code when loaded (pt2, torchscript): only one you made yourself")


def _generation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, help="generated tokens at most (default: the run's task.generate.max_new_tokens)")
    p.add_argument("--temperature", type=float, help="0: greedy (default: the run's task.generate.temperature)")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass, with a temperature above 0")
    p.add_argument("--num-beams", type=int, help="beam search width, greedy decoding only")


def _sampling(args):
    """The generation options given on the command line, over the run's own (None: none given)."""
    given = {k: getattr(args, k) for k in ("max_new_tokens", "temperature", "top_p", "num_beams") if getattr(args, k) is not None}
    if not given:
        return None
    for key, value, ok, fix in (("max_new_tokens", given.get("max_new_tokens", 1), lambda v: v >= 1, "a whole number of 1 or more"),
                                ("temperature", given.get("temperature", 0.0), lambda v: v >= 0, "0 (greedy) or more"),
                                ("top_p", given.get("top_p", 1.0), lambda v: 0 < v <= 1, "a number above 0, at most 1"),
                                ("num_beams", given.get("num_beams", 1), lambda v: v >= 1, "a whole number of 1 or more")):
        if not ok(value) or value != value or value in (float("inf"), float("-inf")):
            raise UserError("--" + key.replace("_", "-"), f"{value} is out of range", f"give {fix}")
    return given


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code.

    Called as a program (no `argv`) in one process, it leaves without Python's interpreter
    teardown once everything is written and flushed: tearing down torch and transformers
    costs about 1.5 s and writes nothing (benchmarks/timeline.py --teardown).
    """
    code = run(argv)
    if argv is None:
        leave(code)
    return code


def leave(code: int) -> int:
    """Exit now, skipping the interpreter's teardown, once output is flushed (one process only:
    under `accelerate launch` the normal exit tears the process group down)."""
    if os.environ.get("WORLD_SIZE", "1") == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "trust", None):
            from weitiao.formats import check_trusted

            check_trusted(args.trust)
        if args.command == "train":
            from weitiao.config import load_config
            from weitiao.train.recipe import train

            cfg = load_config(args.config, args.overrides)
            name = args.name or (None if args.resume else f"{_stem(args.config)}-{time.strftime('%Y%m%d-%H%M%S')}")
            train(cfg, name, args.overwrite, resume=args.resume, force=args.force)
        elif args.command == "eval":
            from weitiao.predict import evaluate_file

            evaluate_file(args.run_dir, args.data, args.output, _positive(args.batch_size), trust=args.trust)
        elif args.command == "predict":
            from weitiao.predict import predict

            field = "--image" if args.image is not None else "--prompt" if args.prompt is not None else "--text"
            inputs = args.image if args.image is not None else args.prompt if args.prompt is not None else args.text
            predict(args.run_dir, inputs, args.file, args.output, _positive(args.batch_size), _sampling(args), field, trust=args.trust)
        elif args.command == "chat":
            from weitiao.predict import chat

            chat(args.run_dir, sampling=_sampling(args), trust=args.trust)
        elif args.command == "export":
            from weitiao.export import export

            print(export(args.run_dir, args.format, args.out, args.task, args.overwrite, args.rows))
        elif args.command == "distill":
            from weitiao.distill import distill_command

            distill_command(args.teacher, args.config, args.overrides, args.name, args.overwrite)
        elif args.command == "tune":
            from weitiao.tune import tune

            tune(args.config, args.trials, args.jobs, args.overrides)
        elif args.command == "report":
            from weitiao.evaluate.report import write_report

            print(write_report(args.run_dir))
        elif args.command == "runs":
            from weitiao.evaluate.runs import runs_table

            runs_table(args.dir, args.json)
        elif args.command == "compare":
            from weitiao.evaluate.runs import compare

            compare(args.runs, args.out)
        elif args.command == "ui":
            from weitiao.ui.app import ui

            ui(args.runs, args.host, args.port)
        elif args.command == "serve":
            from weitiao.serve.server import serve

            serve(args.run_dir, args.host, args.port, args.backend, args.max_batch, args.max_wait_ms, not args.no_batching, args.max_inputs, trust=args.trust)
    except UserError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 3
    except Exception as e:  # a full disk wherever it struck (a library may wrap the OSError); anything else is a bug
        from weitiao.files import full_disk, out_of_space

        code = full_disk(e)
        if code is None:
            raise
        print(f"stopped: {out_of_space(getattr(e, 'filename', None) or 'a file', code, 'what was written before is kept')}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint in the run folder is intact", file=sys.stderr)
        return 130
    return 0


def _positive(batch_size: int | None) -> int | None:
    if batch_size is not None and batch_size < 1:
        raise UserError("--batch-size", f"{batch_size} is not a batch size", "give a whole number of 1 or more")
    return batch_size


def _stem(path: str) -> str:
    from pathlib import Path

    return Path(path).stem
