"""``cspon-rs tuban import``: issued 监测图斑 of a county and period, matched to its warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``tuban`` command group to ``app``."""
    tuban = typer.Typer(help="Issued 监测图斑: import and match to the warnings.", no_args_is_help=True)
    app.add_typer(tuban, name="tuban")

    @tuban.command("import")
    def import_cmd(
        file: Annotated[Path, typer.Argument(help="Issued 图斑: Shapefile (UTF-8/GBK), GeoPackage, or XLSX/CSV with "
                                                  "centre coordinates")],
        county: Annotated[str, typer.Option(help="County code, e.g. 510000")],
        period: Annotated[str, typer.Option(help="Period code, e.g. 2026Q3")],
        db: Annotated[str, typer.Option(help="Store URL, e.g. sqlite:///out/warnings.sqlite")],
        fields: Annotated[Path | None, typer.Option(help="Field mapping YAML (configs/issued_tuban_fields.yaml)")]
        = None,
        out: Annotated[Path | None, typer.Option(help="Also write the three lists as XLSX here")] = None,
        by: Annotated[str, typer.Option(help="Who imports (recorded in history)")] = "cspon-rs",
    ) -> None:
        """Import issued 图斑, match them to the county's warnings (matched / issued-not-detected, which enter
        the verification workflow / detected-not-issued 自主发现) and print the recall."""
        from cspon_rs.store.db import open_store
        from cspon_rs.store.issued import import_issued, load_issued_fields

        mapping = load_issued_fields(fields)
        sessions = open_store(db)
        try:
            with sessions() as session:
                result = import_issued(session, file, county_code=county, period=period.upper(), mapping=mapping,
                                       by=by)
        finally:
            sessions.kw["bind"].dispose()
        n = len(result.matched) + len(result.missed)
        recall = "n/a" if result.recall is None else f"{result.recall:.1%}"
        typer.echo(f"{county} {period}: {n} issued 图斑, recall {recall} ({len(result.matched)} matched, "
                   f"{len(result.missed)} issued but not detected, {len(result.self_found)} 自主发现)")
        for number, ids in result.matched:
            typer.echo(f"matched  {number} -> {', '.join(ids)}")
        for number, warning_id in result.missed:
            typer.echo(f"missed   {number} -> new warning {warning_id} (疑似, to be checked in the field)")
        for warning_id in result.self_found:
            typer.echo(f"自主发现 {warning_id}")
        if result.skipped:
            typer.echo(f"note: already imported, kept as stored: {', '.join(result.skipped)}")
        if result.other_county:
            typer.echo(f"note: county field names another county: {', '.join(result.other_county)}")
        if out is not None:
            path = write_issued_xlsx(result, out)
            typer.echo(f"wrote {path}")


def write_issued_xlsx(result: object, path: Path) -> Path:
    """The three lists of an :class:`~cspon_rs.store.issued.IssuedImport` as one workbook (three sheets)."""
    from openpyxl import Workbook

    from cspon_rs.exports.fileio import atomic_path
    from cspon_rs.store.issued import IssuedImport

    assert isinstance(result, IssuedImport)
    book = Workbook()
    matched = book.active
    matched.title = "已匹配 matched"
    matched.append(["监测编号 issued no", "预警编号 warning ids"])
    for number, ids in result.matched:
        matched.append([number, ", ".join(ids)])
    missed = book.create_sheet("下发未检出 missed")
    missed.append(["监测编号 issued no", "新建预警编号 warning id"])
    for number, warning_id in result.missed:
        missed.append([number, warning_id])
    own = book.create_sheet("自主发现 self-found")
    own.append(["预警编号 warning id"])
    for warning_id in result.self_found:
        own.append([warning_id])
    recall = "n/a" if result.recall is None else f"{result.recall:.1%}"
    matched.append([])
    matched.append([f"召回率 recall {recall}", f"{result.county_code} {result.period}"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        book.save(tmp)
    return path
