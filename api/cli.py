"""CLI commands of the API area: ``serve``, ``worker`` and ``users add|deactivate|revoke``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

users_app = typer.Typer(help="Manage API users and tokens.", no_args_is_help=True)


def _settings(config: Path | None, **overrides: Any) -> Any:
    from pydantic import ValidationError

    from cspon_rs.api.settings import ServeSettings
    from cspon_rs.config import load_yaml_config
    from cspon_rs.errors import ConfigError
    from cspon_rs.store.db import require_file_store

    given = {k: v for k, v in overrides.items() if v is not None}
    if config is not None:
        settings = load_yaml_config(config, ServeSettings, overrides=given)
    else:
        try:
            settings = ServeSettings.model_validate(given)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"--{where.replace('_', '-')}: {first['msg']}") from None
    require_file_store(settings.db_url)
    return settings


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML settings (configs/serve.yaml)")]
DbOpt = Annotated[str | None, typer.Option("--db", help="database URL, e.g. sqlite:///cspon.db")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="folder for uploads, photos, job outputs")]


def serve(
    config: ConfigOpt = None,
    db: DbOpt = None,
    data_dir: DataOpt = None,
    host: Annotated[str | None, typer.Option(help="interface to bind")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    worker: Annotated[bool, typer.Option("--worker/--no-worker", help="start the job worker process")] = True,
) -> None:
    """Start the HTTP API (and its job worker). Docs at http://HOST:PORT/api/v1/docs."""
    import uvicorn

    from cspon_rs.api.app import create_app
    from cspon_rs.api.db import ensure_schema
    from cspon_rs.api.http_protocol import protocol_with_header_timeout
    from cspon_rs.api.orphans import sweep_orphan_photos
    from cspon_rs.api.worker import WorkerSupervisor, recover_jobs

    settings = _settings(config, db_url=db, data_dir=data_dir, host=host, port=port)
    settings.worker = settings.worker and worker
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_schema(settings.db_url)
    failed = recover_jobs(settings)
    if failed:
        typer.echo(f"marked {len(failed)} interrupted job(s) failed: {', '.join(map(str, failed))}", err=True)
    swept = sweep_orphan_photos(settings)
    if swept:
        typer.echo(f"removed {len(swept)} photo file(s) that no verification recorded (an earlier crash)", err=True)
    supervisor = WorkerSupervisor(settings).start() if settings.worker else None
    app = create_app(settings, migrate=False)
    app.state.supervisor = supervisor
    try:
        # request heads have a deadline (slow-header senders are cut off); bodies are bounded by Admission
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", timeout_keep_alive=30,
                    http=protocol_with_header_timeout(settings.header_timeout_s),
                    h11_max_incomplete_event_size=64 * 1024)
    finally:
        if supervisor is not None:
            supervisor.stop()


def worker_cmd(config: ConfigOpt = None, db: DbOpt = None, data_dir: DataOpt = None) -> None:
    """Run only the job worker (when the web server runs elsewhere, e.g. several uvicorn processes)."""
    from cspon_rs.api.db import ensure_schema
    from cspon_rs.api.worker import recover_jobs, run_worker

    settings = _settings(config, db_url=db, data_dir=data_dir)
    ensure_schema(settings.db_url)
    recover_jobs(settings)
    run_worker(settings)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Option("--name", help="unique user name")],
    role: Annotated[str, typer.Option("--role", help="bureau | field | researcher | admin")],
    county: Annotated[str | None, typer.Option("--county", help="6-digit county code (region scope)")] = None,
    team: Annotated[str | None, typer.Option("--team", help="field team name")] = None,
    display_name: Annotated[str | None, typer.Option("--display-name", help="name shown as 核查人 in the outputs, "
                                                                          "e.g. 张三")] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Create a user and print its token once (only a hash is stored)."""
    import re

    from cspon_rs.api.db import ensure_schema, make_engine, make_sessionmaker, session_scope
    from cspon_rs.errors import ConfigError
    from cspon_rs.store.api_crud import create_user

    if not 1 <= len(name) <= 200 or not name.isprintable():
        raise ConfigError(f"--name {name[:40]!r}…: a user name has 1 to 200 printable characters")
    if county is not None and not re.fullmatch(r"[0-9]{6}", county):
        raise ConfigError(f"--county {county!r}: expected a 6-digit county code such as 810000")
    settings = _settings(config, db_url=db)
    ensure_schema(settings.db_url)
    engine = make_engine(settings.db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            try:
                user, token = create_user(session, name, role, county_code=county, team=team,
                                          display_name=display_name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            typer.echo(
                f"user {user.name} (id {user.id}, role {user.role}, county {user.county_code or 'all'}, "
                f"team {user.team or '-'}) created; token (shown once):",
                err=True,
            )
            typer.echo(token)
    finally:
        engine.dispose()


def _end_access(config: Path | None, db: str | None, name: str | None, token: str | None,
                action: str, reissue: bool = False) -> None:
    from cspon_rs.api.db import ensure_schema, make_engine, make_sessionmaker, session_scope
    from cspon_rs.errors import ConfigError
    from cspon_rs.store.api_users import deactivate_user, find_user, revoke_token

    if (name is None) == (token is None):
        raise ConfigError("give a user NAME or --token TOKEN (one of them)")
    settings = _settings(config, db_url=db)
    ensure_schema(settings.db_url)
    engine = make_engine(settings.db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            user = find_user(session, name=name, token=token)
            if action == "deactivate":
                deactivate_user(session, user)
                typer.echo(f"user {user.name} (id {user.id}) deactivated: its token and sessions are refused", err=True)
                return
            new = revoke_token(session, user, reissue=reissue)
            typer.echo(f"token of user {user.name} (id {user.id}) revoked: it and its sessions are refused"
                       + ("; new token (shown once):" if new else ""), err=True)
            if new:
                typer.echo(new)
    finally:
        engine.dispose()


NameArg = Annotated[str | None, typer.Argument(help="user name", show_default=False)]
TokenOpt = Annotated[str | None, typer.Option("--token", help="the token itself (instead of NAME)")]


@users_app.command("deactivate")
def users_deactivate(name: NameArg = None, token: TokenOpt = None, config: ConfigOpt = None,
                     db: DbOpt = None) -> None:
    """Switch a user off: its token and every browser session are refused from the next request on."""
    _end_access(config, db, name, token, "deactivate")


@users_app.command("revoke")
def users_revoke(
    name: NameArg = None,
    token: TokenOpt = None,
    reissue: Annotated[bool, typer.Option("--reissue", help="print a new token for the same user")] = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Revoke a user's token (by NAME or --token): it and its sessions stop working; --reissue prints a new one."""
    _end_access(config, db, name, token, "revoke", reissue)


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``worker`` and ``users`` to the ``cspon-rs`` command."""
    app.command("serve")(serve)
    app.command("worker")(worker_cmd)
    app.add_typer(users_app, name="users")
