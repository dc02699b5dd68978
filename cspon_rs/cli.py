"""The ``cspon-rs`` command line.

Each pipeline area registers its own subcommands through a ``register(app)`` function in its ``cli``
module; heavy imports (torch, dask, geopandas) happen inside the commands so ``cspon-rs --help`` is fast.
Any :class:`~cspon_rs.errors.CsponError` becomes one line on stderr and exit code 2 -- never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from cspon_rs import __version__
from cspon_rs.errors import CsponError

app = typer.Typer(
    name="cspon-rs",
    help="Remote-sensing change detection and early warning for spatial-planning supervision.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: Modules that add subcommands; each defines ``register(app: typer.Typer) -> None``.
_COMMAND_MODULES = (
    "cspon_rs.demo",
    "cspon_rs.training.cli",
    "cspon_rs.training.classifier_cli",
    "cspon_rs.inference.cli",
    "cspon_rs.rules.cli",
    "cspon_rs.store.cli",
    "cspon_rs.store.issued_cli",
    "cspon_rs.api.cli",
)


@app.command()
def version() -> None:
    """Print the cspon-rs version and the versions of the main libraries."""
    import platform

    typer.echo(f"cspon-rs {__version__} (Python {platform.python_version()})")
    for name in ("torch", "segmentation_models_pytorch", "rasterio", "geopandas", "shapely", "dask", "fastapi"):
        try:
            module = importlib.import_module(name)
            typer.echo(f"  {name:<28} {getattr(module, '__version__', '?')}")
        except ImportError:
            typer.echo(f"  {name:<28} not installed")


for _module_name in _COMMAND_MODULES:
    importlib.import_module(_module_name).register(app)


def main() -> None:
    """Entry point of the ``cspon-rs`` script."""
    try:
        app()
    except CsponError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
