"""The small items of issue #22 point 5, each against the real server: uniform 404s, odd cookies and images,
truncated GeoTIFFs, upload quota, deactivate/revoke, time zones, orphan photos, no server paths in answers."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
from apitest_support import REPO, Server, add_user, jpeg_bytes, seed_warnings, write_geotiff

from cspon_rs.api.db import make_engine, make_sessionmaker, session_scope
from cspon_rs.store.api_crud import create_job, create_scene

OTHER = "320115"


def _in_store(db_url: str, *rows_of: object) -> None:
    engine = make_engine(db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            for make in rows_of:
                make(session)  # type: ignore[operator]
    finally:
        engine.dispose()


def test_other_county_ids_answer_exactly_like_missing_ones(server: Server) -> None:
    from cspon_rs.store.models import ModelVersion

    ids: dict[str, int] = {}

    def scene(session):  # type: ignore[no-untyped-def]
        ids["scene"] = create_scene(session, name="other", before_path="/x/b.tif", after_path="/x/a.tif",
                                    county_code=OTHER, info={}).id

    def job(session):  # type: ignore[no-untyped-def]
        ids["job"] = create_job(session, kind="detect_warn", scene_id=ids["scene"], period="2018Q1",
                                county_code=OTHER, params={}).id

    def model(session):  # type: ignore[no-untyped-def]
        row = ModelVersion(county_code=OTHER, checkpoint_path="/srv/secret/m.safetensors", checkpoint_sha256="0" * 64,
                           bands=["R"], detector="x@1", metric="f1", metrics={})
        session.add(row)
        session.commit()
        ids["model"] = row.id

    _in_store(server.db_url, scene, job, model)
    token = add_user(server.db_url, "uniform-404", "researcher", "810000")
    missing = 999_999
    with server.client(token) as c:
        for method, path in (("GET", "/jobs/{}"), ("GET", "/jobs/{}/log"), ("POST", "/jobs/{}/cancel"),
                             ("GET", "/scenes/{}"), ("GET", "/models/{}"), ("POST", "/models/{}/promote")):
            kind = path.split("/")[1][:-1]
            theirs = c.request(method, path.format(ids[kind]))
            absent = c.request(method, path.format(missing))
            assert theirs.status_code == absent.status_code == 404, (path, theirs.text, absent.text)
            assert theirs.content == absent.content, (path, theirs.text, absent.text)


def test_non_ascii_cookie_signature_is_401_not_500(server: Server) -> None:
    for value in ("1.9999999999.abc.\xe9\xe9", "\xb2.9999999999.abc.sig", "1.\xb2\xb3.abc.sig"):
        raw = b"GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nCookie: cspon_session=" + value.encode("latin-1") + \
            b"\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def _png_claiming(width: int, height: int) -> bytes:
    """A small, valid-looking PNG whose header claims ``width × height`` pixels (zlib-compressed zeros)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * (width // 8 + 1)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(min(height, 400))) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_png_decompression_bomb_is_413_and_leaves_no_file(server: Server) -> None:
    bureau = add_user(server.db_url, "bomb-bureau", "bureau", "810000")
    field = add_user(server.db_url, "bomb-field", "field", "810000", "bomb-team")
    wid = seed_warnings(server.db_url, "810000", "2019Q3", 1, seed=5, lon0=114.61, lat0=22.61)[0]
    with server.client(bureau) as b:
        assert b.post(f"/warnings/{wid}/assign", json={"team": "bomb-team"}).status_code == 200
    bomb = _png_claiming(20_000, 20_000)  # 400 Mpx
    assert len(bomb) < 200_000
    before = {p for p in (server.data_dir / "photos").rglob("*") if p.is_file()}
    with server.client(field) as f:
        r = f.post(f"/warnings/{wid}/verifications", data={"result": "illegal", "expected_version": "2"},
                   files={"photos": ("bomb.png", bomb, "image/png")})
    assert r.status_code == 413, r.text
    assert "Mpx" in r.json()["detail"][0]["msg"]
    assert {p for p in (server.data_dir / "photos").rglob("*") if p.is_file()} == before


def test_observed_at_without_time_zone_is_422(server: Server) -> None:
    bureau = add_user(server.db_url, "tz-bureau", "bureau", "810000")
    field = add_user(server.db_url, "tz-field", "field", "810000", "tz-team")
    wid = seed_warnings(server.db_url, "810000", "2019Q4", 1, seed=6, lon0=114.71, lat0=22.71)[0]
    with server.client(bureau) as b:
        assert b.post(f"/warnings/{wid}/assign", json={"team": "tz-team"}).status_code == 200
    with server.client(field) as f:
        naive = f.post(f"/warnings/{wid}/verifications", data={
            "result": "illegal", "expected_version": "2", "observed_at": "2019-11-02T10:00:00"})
        assert naive.status_code == 422, naive.text
        assert naive.json()["detail"][0]["loc"][-1] == "observed_at"
        aware = f.post(f"/warnings/{wid}/verifications", data={
            "result": "illegal", "expected_version": "2", "observed_at": "2019-11-02T10:00:00+08:00"},
            files={"photos": ("p.jpg", jpeg_bytes(), "image/jpeg")})
        assert aware.status_code == 201, aware.text


def test_truncated_geotiff_is_not_registered(server: Server, tmp_path: Path) -> None:
    token = add_user(server.db_url, "trunc-res", "researcher", "810000")
    shared = server.data_dir.parent / "shared" / "trunc"
    before = write_geotiff(shared / "before.tif", seed=1, size=256)
    after = write_geotiff(shared / "after.tif", seed=2, size=256, shift=True)
    cut = shared / "after_cut.tif"
    cut.write_bytes(after.read_bytes()[: after.stat().st_size // 2])
    with server.client(token) as c:
        r = c.post("/scenes", json={"name": "t", "before_path": str(before), "after_path": str(cut)})
        assert r.status_code == 422, r.text
        msg = r.json()["detail"][0]["msg"]
        assert "truncated or damaged" in msg and str(shared) not in msg, msg
        ok = c.post("/scenes", json={"name": "t", "before_path": str(before), "after_path": str(after)})
        assert ok.status_code == 201, ok.text


def test_no_server_paths_in_422_or_models(server: Server) -> None:
    field = add_user(server.db_url, "paths-field", "field", "810000", "paths-team")
    res = add_user(server.db_url, "paths-res", "researcher", "810000")
    roots = [str(server.data_dir.resolve()), str((server.data_dir.parent / "shared").resolve()), str(REPO)]
    with server.client(field) as f:
        models = f.get("/models")
        assert models.status_code == 200
        assert not any(r in models.text for r in roots) and "/safetensors" not in models.text, models.text[:400]
        assert {m["path"] for m in models.json()} >= {"spectral"}
    with server.client(res) as c:
        r = c.post("/scenes", json={"name": "x", "before_path": "/etc/hostname", "after_path": "nope.tif"})
        assert r.status_code == 422
        assert not any(root in r.text for root in roots), r.text


def test_upload_quota_per_user(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("upload_quota_bytes: 300000\nworker: false\n")
    srv = Server(tmp_path / "q.db", tmp_path / "data", tmp_path / "serve.log", ["--config", str(config)]).start()
    try:
        token = add_user(srv.db_url, "quota-res", "researcher", "810000")
        before = write_geotiff(tmp_path / "b.tif", seed=1, size=128).read_bytes()  # ~130 KB each
        after = write_geotiff(tmp_path / "a.tif", seed=2, size=128).read_bytes()
        with srv.client(token) as c:
            first = c.post("/scenes/upload", data={"name": "q1"},
                           files={"before": ("b.tif", before), "after": ("a.tif", after)})
            assert first.status_code == 201, first.text
            second = c.post("/scenes/upload", data={"name": "q2"},
                            files={"before": ("b.tif", before), "after": ("a.tif", after)})
            assert second.status_code == 413 and "quota" in second.text, second.text
        files = [p for p in (tmp_path / "data" / "uploads").rglob("*") if p.is_file()]
        assert len(files) == 2, files  # the refused pair left nothing behind
    finally:
        srv.stop()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cspon_rs.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_users_deactivate_and_revoke(server: Server) -> None:
    a = add_user(server.db_url, "gone-user", "bureau", "810000")
    b = add_user(server.db_url, "revoked-user", "bureau", "810000")
    c_token = add_user(server.db_url, "token-revoked", "bureau", "810000")
    with httpx.Client(base_url=f"{server.base}/api/v1") as web:
        session = web.post("/session", json={"token": b})
        assert session.status_code == 200
        assert web.get("/users/me").status_code == 200  # the cookie works before the revoke
        for token in (a, b, c_token):
            assert web.get("/users/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        done = _cli("users", "deactivate", "gone-user", "--db", server.db_url)
        assert done.returncode == 0, done.stderr
        done = _cli("users", "revoke", "revoked-user", "--reissue", "--db", server.db_url)
        assert done.returncode == 0, done.stderr
        fresh = done.stdout.strip()
        done = _cli("users", "revoke", "--token", c_token, "--db", server.db_url)
        assert done.returncode == 0 and not done.stdout.strip(), done.stdout
        for token in (a, b, c_token):
            assert web.get("/users/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert web.get("/users/me").status_code == 401  # the browser session ended with its token
        me = web.get("/users/me", headers={"Authorization": f"Bearer {fresh}"})
        assert me.status_code == 200 and me.json()["name"] == "revoked-user"
    again = _cli("users", "revoke", "--token", c_token, "--db", server.db_url)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "no user holds" in again.stderr
    nobody = _cli("users", "deactivate", "no-such-user", "--db", server.db_url)
    assert nobody.returncode == 2 and "no user named" in nobody.stderr


def test_orphan_photo_files_are_swept_on_start(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("orphan_grace_s: 0\nworker: false\n")
    srv = Server(tmp_path / "o.db", tmp_path / "data", tmp_path / "serve.log", ["--config", str(config)]).start()
    try:
        bureau = add_user(srv.db_url, "orph-bureau", "bureau", "810000")
        field = add_user(srv.db_url, "orph-field", "field", "810000", "orph-team")
        wid = seed_warnings(srv.db_url, "810000", "2018Q1", 1)[0]
        with srv.client(bureau) as b:
            assert b.post(f"/warnings/{wid}/assign", json={"team": "orph-team"}).status_code == 200
        with srv.client(field) as f:
            r = f.post(f"/warnings/{wid}/verifications", data={"result": "illegal", "expected_version": "2"},
                       files={"photos": ("p.jpg", jpeg_bytes(), "image/jpeg")})
            assert r.status_code == 201, r.text
        kept = [p for p in (tmp_path / "data" / "photos").rglob("*") if p.is_file()]
        assert len(kept) == 1
        # what kill -9 between the photo write and the row's commit leaves behind
        orphan = kept[0].parent / "crashed.jpg"
        orphan.write_bytes(jpeg_bytes(seed=3))
        srv.kill9()
        srv.start()
        left = [p for p in (tmp_path / "data" / "photos").rglob("*") if p.is_file()]
        assert left == kept, left
        assert "removed 1 photo file" in srv.log_path.read_text()
    finally:
        srv.stop()


def test_revision_0009_keeps_users(tmp_path: Path) -> None:
    """Upgrading a store at 0008 with users adds the two columns and keeps every row."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from cspon_rs.store.db import MIGRATIONS_DIR

    url = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0008_photo_evidence")
    engine = sa.create_engine(url)
    with engine.begin() as con:
        con.execute(sa.text("INSERT INTO api_users (name, role, county_code, token_hash, active, created_at) "
                            "VALUES ('old', 'bureau', '810000', 'h1', 1, '2026-11-01 00:00:00')"))
    command.upgrade(cfg, "0009_service_limits")
    with engine.begin() as con:
        rows = con.execute(sa.text("SELECT name, active, deactivated_at, token_revoked_at FROM api_users")).all()
    engine.dispose()
    assert rows == [("old", 1, None, None)]



def test_a_large_upload_is_on_disk_once(server: Server, tmp_path: Path) -> None:
    """A scene pair above the 1 MiB spool: the stored file is the multipart spool itself, hard-linked into place
    (same inode), not a second copy; the spool's temporary name is gone afterwards."""
    import asyncio

    from starlette.datastructures import UploadFile

    from cspon_rs.api.spool import NamedSpool, spool_uploads_in, spooled_path
    from cspon_rs.api.uploads import save_upload

    data_dir = tmp_path / "data"
    spool_uploads_in(data_dir / "tmp")
    payload = write_geotiff(tmp_path / "big.tif", seed=4, size=400).read_bytes()  # ~1.3 MB
    assert len(payload) > 1024 * 1024
    spool = NamedSpool(max_size=1024 * 1024)
    upload = UploadFile(file=spool, size=0, filename="big.tif")  # type: ignore[arg-type]

    async def receive_and_save() -> tuple[int, object]:
        for start in range(0, len(payload), 65536):  # as the multipart parser writes it
            await upload.write(payload[start:start + 65536])
        await upload.seek(0)
        spooled = spooled_path(spool)
        assert spooled is not None and spooled.parent == data_dir / "tmp"
        inode = spooled.stat().st_ino
        saved = await save_upload(upload, data_dir / "uploads" / "u1", data_dir, allowed=("tiff",),
                                  max_bytes=10**9, field="before")
        await upload.close()
        return inode, saved

    inode, saved = asyncio.run(receive_and_save())
    assert saved.path.stat().st_ino == inode and saved.path.read_bytes() == payload  # type: ignore[attr-defined]
    assert saved.size == len(payload)  # type: ignore[attr-defined]
    assert not list((data_dir / "tmp").glob(".upload-*"))  # the spool's own name went with the request
    # and through the server: a pair above the spool size registers as before
    token = add_user(server.db_url, "big-upload", "researcher", "810000")
    with server.client(token) as c:
        other = write_geotiff(tmp_path / "big2.tif", seed=5, size=400, shift=True).read_bytes()
        r = c.post("/scenes/upload", data={"name": "big"},
                   files={"before": ("b.tif", payload), "after": ("a.tif", other)})
        assert r.status_code == 201, r.text
    import time

    deadline = time.monotonic() + 10  # the request's form is closed right after the response
    while list((server.data_dir / "tmp").glob(".upload-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list((server.data_dir / "tmp").glob(".upload-*"))
