"""Command line of the ``recon`` package: ``python -m recon <command> ...``.

Every command prints one JSON document on stdout and progress on stderr. A
failure prints exactly one line, ``error: ...``, on stderr and exits non-zero;
never a traceback, because the callers are scripts and workers that parse
stdout and show stderr to people.

Exit codes: 0 success; 1 ``validate`` found an invalid file; 2 bad input
(arguments, unreadable or inconsistent files: MDFError, ValueError, OSError);
3 unexpected failure (a bug: the line names the exception type).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["main", "build_parser"]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_UNEXPECTED = 3


class UsageError(Exception):
    """Bad command-line arguments (exit 2)."""


class _Parser(argparse.ArgumentParser):
    # argparse prints usage plus a message and calls sys.exit; we want one
    # 'error:' line, so turn its errors into an exception handled in main().
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


# --------------------------------------------------------------------------- #
# JSON output
# --------------------------------------------------------------------------- #


def _jsonable(obj: Any) -> Any:
    """Plain JSON types from numpy values, dataclasses and paths; arrays larger than 64 values are dropped."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(v, np.ndarray) and v.size > 64:
                continue  # a summary, not a data dump: volumes go to files
            out[str(k)] = _jsonable(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, complex):
        return {"real": obj.real, "imag": obj.imag}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def _emit(payload: Any) -> None:
    sys.stdout.write(json.dumps(_jsonable(payload), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def _progress(stage: str, fraction: float) -> None:
    sys.stderr.write(f"progress: {stage} {100.0 * float(fraction):5.1f}%\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- #
# argument types
# --------------------------------------------------------------------------- #


def _channels(text: str) -> tuple[int, ...]:
    """'1,2' (1-based receive channels, as numbered on the scanner) -> (0, 1)."""
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"channels must be comma-separated integers like 1,2, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"channels are numbered from 1, got {text!r}")
    return tuple(v - 1 for v in values)


def _frames(text: str) -> tuple[int | None, int | None]:
    """'0:100' -> (0, 100); '10:' -> (10, None); ':50' -> (None, 50). 0-based, stop exclusive."""
    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"frames must be START:STOP like 0:100, got {text!r}")
    try:
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"frames must be START:STOP integers like 0:100, got {text!r}") from None
    if start is not None and stop is not None and stop <= start:
        raise argparse.ArgumentTypeError(f"frames {text!r} select nothing (stop <= start)")
    return start, stop


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


# --------------------------------------------------------------------------- #
# commands
# --------------------------------------------------------------------------- #


def _cmd_info(args: argparse.Namespace) -> int:
    from recon.mdf import MDFFile

    with MDFFile(args.file) as f:
        out: dict[str, Any] = {
            "path": f.path,
            "version": f.version,
            "kind": f.kind,
        }
        if f.kind != "reconstruction":
            out.update(
                {
                    "frames": f.num_frames,
                    "periods_per_frame": f.num_periods,
                    "receive_channels": f.num_receive_channels,
                    "samples_per_period": f.num_sampling_points,
                    "frequencies": f.num_frequencies,
                    "stored_frequencies": int(f.available_frequencies.size),
                    "bandwidth_hz": f.bandwidth_hz,
                    "base_frequency_hz": f.base_frequency_hz,
                    "dividers": f.dividers,
                    "drive_strength_t": f.drive_strength_t,
                    "layout": f.layout,
                    "data_shape": list(f.data_shape),
                    "data_dtype": f.data_dtype,
                    "background_frames": int(np.count_nonzero(f.is_background_frame)),
                    "has_transfer_function": f.transfer_function is not None,
                }
            )
        if f.kind == "calibration":
            out["calibration"] = {
                "size": list(f.calibration_size) if f.calibration_size else None,
                "field_of_view_m": f.field_of_view_m,
                "field_of_view_center_m": f.field_of_view_center_m,
                "method": f.field("/calibration/method", None),
                "has_snr": f.snr is not None,
            }
        if f.has("/tracer"):
            out["tracer"] = {
                "name": f.field("/tracer/name", None),
                "solute": f.field("/tracer/solute", None),
                "concentration_mol_per_l": f.tracer_concentration_mol_per_l,
            }
        if f.kind == "reconstruction":
            data, meta = f.reconstruction()
            out["reconstruction"] = {
                "shape": list(data.shape),
                "size": meta["size"],
                "field_of_view_m": meta["fieldOfView"],
                "field_of_view_center_m": meta["fieldOfViewCenter"],
                "order": meta["order"],
                "unit": meta["unit"],
                "parameters": meta["parameters"],
            }
    _emit(out)
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    from recon.validate import validate, validate_pair

    report = validate(args.file) if args.measurement is None else validate_pair(args.file, args.measurement)
    _emit(report.as_dict())
    if not report.valid:
        first = report.problems[0]
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        sys.stderr.write(f"error: invalid MDF file: {first.code}: {first.message}{more}\n")
        return EXIT_INVALID
    return EXIT_OK


def _cmd_simulate(args: argparse.Namespace) -> int:
    from recon.simulate import simulate_to_files

    options: dict[str, Any] = {}
    if args.noise is not None:
        options["noise_std_v"] = args.noise  # receiver noise per sample, V
    kwargs = {
        k: v
        for k, v in (("dims", args.dims), ("phantom", args.phantom), ("seed", args.seed), ("frames", args.frames))
        if v is not None
    }
    result = simulate_to_files(args.output_dir, **kwargs, **options)
    _emit(result)
    return EXIT_OK


def _cmd_simulate_stream(args: argparse.Namespace) -> int:
    from recon.live_simulate import simulate_injection_stream

    result = simulate_injection_stream(
        args.output_dir, dims=args.dims, num_frames=args.frames, lung_fraction=args.lung_fraction, seed=args.seed
    )
    _emit({k: v for k, v in result.items() if k not in ("iron_ng", "injected_ng", "is_background", "roi_records")})
    return EXIT_OK


# CLI option -> ReconParams keyword. Only options given on the command line are
# passed, so the defaults stay written in one place (ReconParams).
_RECON_OPTIONS = {
    "solver": "solver",
    "lambda_": "lambda_",
    "iterations": "iterations",
    "snr_threshold": "snr_threshold",
    "min_freq": "min_freq_hz",
    "max_freq": "max_freq_hz",
    "max_rows": "max_rows",
    "channels": "channels",
    "frames": "frames",
    "average": "average",
    "background": "background",
}


def recon_params_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ReconParams`` keywords given on the command line (unset options left out)."""
    kwargs = {key: getattr(args, opt) for opt, key in _RECON_OPTIONS.items() if getattr(args, opt) is not None}
    if getattr(args, "memory_budget_mb", None) is not None:
        kwargs["memory_budget_bytes"] = max(1, int(args.memory_budget_mb * 2**20))
    return kwargs


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from recon.params import ReconParams
    from recon.pipeline import reconstruct_file

    params = ReconParams(**recon_params_kwargs(args))
    extra = {} if args.operator_cache is None else {"operator_cache_dir": args.operator_cache}
    result = reconstruct_file(args.system_matrix, args.measurement, args.output, params, progress=_progress, **extra)
    _emit({"output": os.fspath(args.output), **result.as_dict()})
    return EXIT_OK


def _cmd_quantify(args: argparse.Namespace) -> int:
    from recon.quantify import quantify_file

    options = {
        "k": args.k,
        "injected_iron_ng": args.injected_iron_ng,
        "pg_fe_per_cell": args.pg_fe_per_cell,
        "system_matrix_path": args.system_matrix,
    }
    kwargs = {name: value for name, value in options.items() if value is not None}
    result = quantify_file(args.reconstruction, args.rois, **kwargs)
    _emit(result)
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from recon.bench import main as bench_main

    rest = list(args.bench_args)
    if rest and rest[0] == "--":
        rest = rest[1:]
    code = bench_main(rest)
    return int(code or 0)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m recon`` argument parser."""
    parser = _Parser(
        prog="python -m recon", description="MPI reconstruction tools on MDF files. JSON on stdout, progress on stderr."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("info", help="summarise an MDF file")
    p.add_argument("file", help="MDF file (measurement, calibration or reconstruction)")
    p.set_defaults(handler=_cmd_info)

    p = sub.add_parser("validate", help="check an MDF file (exit 0 valid, 1 invalid)")
    p.add_argument("file")
    p.add_argument(
        "--measurement",
        metavar="SCAN",
        help="FILE is a calibration: also check this scan against it (what reconstruct would refuse)",
    )
    p.set_defaults(handler=_cmd_validate)

    p = sub.add_parser("simulate", help="simulate a system matrix, a measurement and ROIs")
    p.add_argument("--output-dir", required=True, help="folder for the generated files")
    p.add_argument("--dims", type=int, choices=(1, 2, 3))
    p.add_argument("--phantom", choices=("mouse", "points", "spheres"))
    p.add_argument("--seed", type=int)
    p.add_argument("--frames", type=_positive_int)
    p.add_argument("--noise", type=_nonneg_float, metavar="V", help="receiver noise per sample in V (noise_std_v)")
    p.set_defaults(handler=_cmd_simulate)

    p = sub.add_parser(
        "simulate-stream", help="simulate an injection stream: calibration.mdf, stream.mdf, rois.json, truth.json"
    )
    p.add_argument("output_dir", metavar="OUTDIR")
    p.add_argument("--dims", type=int, choices=(2, 3), default=2)
    p.add_argument("--frames", type=_positive_int, default=120, help="foreground frames")
    p.add_argument(
        "--lung-fraction", type=_nonneg_float, default=0.2, metavar="F", help="share of the dose to the lungs"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_cmd_simulate_stream)

    p = sub.add_parser("reconstruct", help="reconstruct a measurement with a system matrix")
    p.add_argument("--system-matrix", required=True, metavar="CAL.mdf")
    p.add_argument("--measurement", required=True, metavar="MEAS.mdf")
    p.add_argument("--output", required=True, metavar="OUT.mdf")
    p.add_argument("--solver", choices=("kaczmarz", "cgnr", "fista", "fast"))
    p.add_argument("--lambda", dest="lambda_", type=_nonneg_float, metavar="F", help="regularisation weight")
    p.add_argument("--iterations", type=_positive_int)
    p.add_argument("--snr-threshold", type=_nonneg_float, metavar="F")
    p.add_argument("--min-freq", type=_nonneg_float, metavar="HZ")
    p.add_argument("--max-freq", type=_nonneg_float, metavar="HZ")
    p.add_argument("--max-rows", type=_positive_int, metavar="N")
    p.add_argument(
        "--memory-budget-mb",
        type=_nonneg_float,
        metavar="MB",
        help="memory the default row budget plans for (default: a quarter of the available memory)",
    )
    p.add_argument(
        "--operator-cache",
        metavar="DIR",
        help="with --solver fast: load the reconstruction operator from DIR, or build and save it there",
    )
    p.add_argument("--channels", type=_channels, metavar="1,2", help="receive channels, numbered from 1")
    p.add_argument("--frames", type=_frames, metavar="START:STOP", help="0-based frame range, stop exclusive")
    p.add_argument("--average", type=_positive_int, metavar="N", help="block-average N frames")
    p.add_argument("--background", metavar="mean|interpolate|none|PATH")
    p.set_defaults(handler=_cmd_reconstruct)

    p = sub.add_parser("quantify", help="iron per region of interest in a reconstruction")
    p.add_argument("--reconstruction", required=True, metavar="OUT.mdf")
    p.add_argument("--rois", required=True, metavar="ROIS.json")
    p.add_argument(
        "--system-matrix",
        metavar="CAL.mdf",
        help="the calibration the image was reconstructed with: exact region spread (recommended)",
    )
    p.add_argument("--k", type=_nonneg_float, help="detection threshold: background mean + k SD")
    p.add_argument(
        "--injected-iron-ng",
        type=_nonneg_float,
        metavar="NG",
        help="iron injected (cells x pg Fe per cell), for retention %%",
    )
    p.add_argument("--pg-fe-per-cell", type=_nonneg_float, metavar="PG", help="iron per labelled cell, for cell counts")
    p.set_defaults(handler=_cmd_quantify)

    p = sub.add_parser("bench", help="run the benchmarks (arguments passed to recon.bench)", add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(handler=_cmd_bench)
    return parser


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit code (never raises, except SystemExit from --help).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when None.
    """
    from recon.mdf import MDFError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        if argv and argv[0] == "bench":
            # everything after 'bench' belongs to recon.bench, '--help' included
            args = argparse.Namespace(command="bench", handler=_cmd_bench, bench_args=argv[1:])
        else:
            args = parser.parse_args(argv)
        if getattr(args, "handler", None) is None:
            raise UsageError(
                "python -m recon: a command is required (info, validate, simulate, simulate-stream, reconstruct, quantify, bench)"
            )
        return args.handler(args)
    except UsageError as exc:
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        return EXIT_USAGE
    except ImportError as exc:
        # a numerics module that is missing or broken: say which, no traceback
        sys.stderr.write(
            f"error: cannot load {getattr(exc, 'name', None) or 'a recon module'}: "
            f"{type(exc).__name__}: {_one_line(exc)}\n"
        )
        return EXIT_UNEXPECTED
    except (MDFError, ValueError, OSError) as exc:
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except SystemExit:
        raise  # --help and friends
    except BaseException as exc:  # noqa: BLE001 - the whole point is no traceback
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {_one_line(exc)}\n")
        return EXIT_UNEXPECTED
