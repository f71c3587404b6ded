"""Option types, value parsers and the option decorators the commands share.

The stage commands (extract-2d, calibrate-depth, voxelize) take the same run flags: ``--scenes``,
``--device``, ``--overwrite``, ``--dry-run``, the scale-out flags (docs/scaling.md) and ``--option
KEY=VALUE``. :func:`run_flags` gathers the run flags into one :class:`RunFlags` for the dispatcher.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import click

from occlabel.errors import OccLabelError


class _StoreType(click.ParamType):
    """A store location: a local path (a Path) or an fsspec URL such as s3://bucket/x.zarr (a string)."""

    name = "PATH|URL"

    def convert(self, value, param, ctx):
        from occlabel.store.common import store_location

        return value if isinstance(value, Path) else store_location(str(value))


STORE = _StoreType()


# ---------------------------------------------------------------------------------------------- values
def scene_list(value: str | None) -> list[str] | None:
    """``--scenes a,b`` -> ["a", "b"]; None (all scenes) when not given."""
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


def ints(value: str, name: str) -> tuple[int, ...]:
    """Comma-separated integers (``--neighbours -1,1``) -> tuple; at least one."""
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{name}: expected comma-separated integers, got {value!r}") from None
    if not out:
        raise click.BadParameter(f"{name}: expected at least one integer")
    return out


def size(value: str | None) -> tuple[int, int] | None:
    """``WIDTHxHEIGHT`` -> (width, height); None when not given."""
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT like 320x192, got {value!r}") from None
    return w, h


def key_values(values: tuple[str, ...], flag: str, keep_colons: bool = False) -> dict:
    """A repeatable ``KEY=VALUE`` option (VALUE read as YAML: 0.2, true, [1, 2], text) -> dict."""
    from occlabel.utils import key_values as parse

    try:
        return parse(values, flag, keep_colons)
    except OccLabelError as e:
        raise click.BadParameter(str(e)) from None


# ---------------------------------------------------------------------------------------------- decorators
def _apply(f, opts):
    for o in reversed(opts):
        f = o(f)
    return f


def scenes_option(f):
    """--scenes a,b."""
    return click.option("--scenes", default=None, help="Comma-separated scene names (default: all).")(f)


def device_option(help: str | None = None):
    """--device (auto, cpu, cuda, cuda:N)."""
    return click.option("--device", default="auto", show_default=True, help=help)


def overwrite_option(help: str):
    """--overwrite, with the command's own meaning."""
    return click.option("--overwrite", is_flag=True, help=help)


def dry_run_option(f):
    """--dry-run: the stage's planner table, nothing written."""
    return click.option(
        "--dry-run",
        is_flag=True,
        help="List the work (scenes x cameras x frames to do / done) and exit; write nothing.",
    )(f)


def option_option(help: str):
    """--option KEY=VALUE (repeatable; VALUE read as YAML): the stage's settings by name."""
    return click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help=help)


def scale_options(f):
    """--shard, --executor, --ray-address, --workers, --max-retries (docs/scaling.md)."""
    return _apply(
        f,
        [
            click.option(
                "--shard",
                default=None,
                metavar="K/N",
                help="Only the scenes of shard K of N (0-based; a scene's shard is a stable hash of its name), "
                "e.g. --shard $SLURM_ARRAY_TASK_ID/8. Shards may write one store at the same time.",
            ),
            click.option(
                "--executor",
                type=click.Choice(["local", "ray"]),
                default="local",
                show_default=True,
                help="local: the scenes one after the other in this process; ray: one Ray task per scene.",
            ),
            click.option(
                "--ray-address",
                default=None,
                help="Ray cluster to use (auto, head:6379, ray://head:10001); default: a local Ray started here.",
            ),
            click.option(
                "--workers",
                default=None,
                type=click.IntRange(1),
                help="CPUs of the local Ray (--executor ray without --ray-address); default: all cores.",
            ),
            click.option(
                "--max-retries",
                default=2,
                show_default=True,
                type=click.IntRange(0),
                help="--executor ray: further attempts of a failed scene; failed scenes are listed at the end.",
            ),
        ],
    )


@dataclass
class RunFlags:
    """The run flags of a stage command: which scenes, where, and how (read by cli.dispatch)."""

    scenes: list[str] | None  # --scenes (None: all)
    device: str
    overwrite: bool
    dry_run: bool
    shard: str | None  # "K/N"
    executor: str  # "local" or "ray"
    ray_address: str | None
    workers: int | None
    max_retries: int
    progress: bool  # not --quiet


_RUN_FLAGS = ("scenes", "device", "overwrite", "dry_run", "shard", "executor", "ray_address", "workers")


def run_flags(settings: tuple[str, ...] = (), reserved: tuple[str, ...] = ()):
    """Hands a stage command ``(ctx, run: RunFlags, options: dict, **its own flags)``; apply it right above
    the function (below ``click.pass_context``).

    ``--option KEY=VALUE`` pairs naming one of the command's ``settings`` (flag names, e.g. batch_size) set
    that flag, as if given as it (the same checks); a ``reserved`` name (or a run flag) is an error; the
    other pairs come as ``options``, for the stage's keyword options.
    """

    def decorate(f):
        @functools.wraps(f)
        def wrapper(ctx: click.Context, **kwargs):
            flags = {k: kwargs.pop(k) for k in _RUN_FLAGS}
            flags["scenes"] = scene_list(flags["scenes"])
            run = RunFlags(**flags, max_retries=kwargs.pop("max_retries"), progress=ctx.obj["progress"])
            pairs = key_values(kwargs.pop("options"), "--option")
            options = _set_flags(ctx, pairs, kwargs, settings, (*_RUN_FLAGS, "max_retries", *reserved))
            return f(ctx, run, options, **kwargs)

        return wrapper

    return decorate


def _set_flags(ctx: click.Context, pairs: dict, kwargs: dict, settings, reserved) -> dict:
    """Put the ``--option`` pairs that name a flag of ``settings`` into ``kwargs``; return the others.

    A flag given on the command line beats an --option from --config; both on the command line: an error.
    """
    from click.core import ParameterSource

    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    params = {p.name: p for p in ctx.command.params}
    rest = {}
    for key, value in pairs.items():
        if key in reserved:
            raise OccLabelError(f"--option {key}: set it with the command's own arguments and flags")
        if key not in settings:
            rest[key] = value
            continue
        if ctx.get_parameter_source(key) in given:
            if ctx.get_parameter_source("options") in given:
                raise OccLabelError(f"--option {key} and --{key.replace('_', '-')}: give one of the two")
            continue
        if isinstance(value, list | tuple):  # as in --config: 96,192,384
            value = ",".join(map(str, value))
        kwargs[key] = params[key].type_cast_value(ctx, value)
    return rest


__all__ = [
    "STORE",
    "RunFlags",
    "device_option",
    "dry_run_option",
    "ints",
    "key_values",
    "option_option",
    "overwrite_option",
    "run_flags",
    "scale_options",
    "scene_list",
    "scenes_option",
    "size",
]
