"""The ``occlabel`` command line: each command parses its options and calls a library function.

The stage commands (cli/extract.py, cli/stages.py) hand their parsed options to one dispatcher (cli/dispatch.py: scenes,
shard, dry run, Ray or local); the other commands (cli/tools.py) call one function each. What a command
does beyond parsing lives in the library: backend confs in occlabel.models.confs, dataset options in
occlabel.datasets.options, synthetic layouts in occlabel.datasets.synthetic.layouts, the to-do planners in
the stages. User mistakes (OccLabelError) print one line and exit with code 2; ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from occlabel import __version__
from occlabel.errors import OccLabelError


def load_config(path: Path, group: click.Group) -> dict[str, dict]:
    """``--config`` YAML -> click ``default_map``: one section per command, keys the option names as
    flags (``depth-model``, ``batch-size``; ``_`` works too), values as on the command line (lists for
    repeatable options, a mapping for ``*-option`` KEY=VALUE pairs, ``no-photometric: true`` or
    ``photometric: false``). Unknown commands and options are a one-line error."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise OccLabelError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise OccLabelError(f"--config {path}: not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OccLabelError(
            f"--config {path}: expected a mapping of command names to options, e.g. 'extract-2d: {{batch-size: 4}}'"
        )
    out: dict[str, dict] = {}
    for section, opts in data.items():
        cmd = group.commands.get(str(section))
        if cmd is None:
            raise OccLabelError(
                f"--config {path}: unknown command {section!r} (known: {', '.join(sorted(group.commands))})"
            )
        if opts is None:
            continue
        if not isinstance(opts, dict):
            raise OccLabelError(f"--config {path}: {section}: expected a mapping of option names to values")
        flags: dict[str, click.Option] = {}
        for p in cmd.params:
            if isinstance(p, click.Option):
                for o in (*p.opts, *p.secondary_opts):
                    if o.startswith("--"):
                        flags[o[2:]] = p
        values: dict = {}
        for key, value in opts.items():
            name = str(key).replace("_", "-")
            p = flags.get(name)
            if p is None:
                raise OccLabelError(
                    f"--config {path}: {section}: unknown option {key!r} (known: {', '.join(sorted(flags))})"
                )
            if value is None:
                continue
            if "--" + name in p.secondary_opts:  # no-photometric: true
                value = not value
            if p.multiple:
                if isinstance(value, dict):
                    value = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
                elif not isinstance(value, list | tuple):
                    value = [value]
                value = [str(v) for v in value]
            elif isinstance(value, list | tuple):
                value = ",".join(map(str, value))
            values[p.name] = value
        out[cmd.name] = values
    return out


class _Group(click.Group):
    """Turns OccLabelError into one line on stderr and exit code 2 (traceback only with --debug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OccLabelError as e:
            if ctx.find_root().params.get("debug"):
                raise
            for item, reason in getattr(e, "skipped", [])[1:]:
                click.echo(f"skipped: {reason if reason.startswith(item) else f'{item}: {reason}'}", err=True)
            click.echo(f"error: {e}", err=True)
            sys.exit(getattr(e, "exit_code", 2))
        except KeyboardInterrupt:
            click.echo("interrupted: finished frames are kept; rerun the same command to resume", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="occlabel")
@click.option("-v", "--verbose", count=True, help="Log what each stage does (-vv: debug messages).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars (warnings and errors still print).")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML of option defaults, one section per command (extract-2d: {depth-model: oracle, batch-size: "
    "8}); options on the command line override it.",
)
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool, debug: bool, config_file: Path | None) -> None:
    """occlabel: 3D semantic occupancy labels from cameras alone.

    \b
    Pipeline:  extract-2d -> calibrate-depth -> voxelize -> evaluate / export
    Look:      show (a picture), report (an HTML page of a run), info (what a store holds)
    Try it:    occlabel demo
    """
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = {"progress": not quiet}
    if config_file is not None:
        # the subcommand's context is made after this callback and takes its defaults from here
        ctx.default_map = load_config(config_file, ctx.command)


def _register() -> None:
    from occlabel.cli import extract, stages, tools

    for cmd in (extract.extract_2d, stages.calibrate_depth, stages.voxelize, *tools.COMMANDS):
        main.add_command(cmd)


_register()

__all__ = ["load_config", "main"]
