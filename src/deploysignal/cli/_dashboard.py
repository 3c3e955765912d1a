"""``deploysignal ui`` (the dashboard over a local store or files) and ``deploysignal report`` (one HTML file).

Exit codes: 0 ok; 1 an audit chain that does not verify (no report written); 2 bad input or usage.
Wire into the main app with :func:`register`.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .._exceptions import ConfigError, DeploySignalError, InputError

__all__ = ["local_app", "register", "report", "ui"]

err = Console(stderr=True, highlight=False, soft_wrap=True)


def _named_views(paths: list[Path], what: str, source: str, build: Any) -> dict[str, dict[str, Any]]:
    """``{name: build(text, name)}`` for each file (named after the file less a known ending,
    ``deploysignal.dashboard._source.name_of_file``), read as UTF-8."""
    from ..dashboard._source import name_of_file

    out: dict[str, dict[str, Any]] = {}
    for p in paths:
        if not p.is_file():
            raise ConfigError(f"{p}: no such file (expected `{source}` output)")
        name = name_of_file(p)
        if name in out:
            raise ConfigError(f"{p}: a second {what} file named {name!r}")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            line = p.read_bytes()[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{p}: line {line}: not UTF-8 text (byte {exc.start}); expected `{source}` output") from None
        try:
            out[name] = build(text, name)
        except InputError as exc:
            raise ConfigError(f"{p}: {exc}") from None
    return out


def _fleet_views(paths: list[Path]) -> dict[str, dict[str, Any]]:
    from ..dashboard import fleet_view

    return _named_views(paths, "fleet", "deploysignal fleet observe --jsonl", lambda text, name: fleet_view(text.splitlines(), name))


def _migration_views(paths: list[Path]) -> dict[str, dict[str, Any]]:
    from ..dashboard._migration_view import migration_view

    return _named_views(paths, "migration", "deploysignal migrate run --json", migration_view)


def _file_views(audits: list[Path], heads: list[str]) -> dict[str, tuple[dict[str, Any], str]]:
    """The views of audit files, each checked against its ``--head`` (the i-th head for the i-th file)."""
    from ..dashboard import audit_file_view

    if heads and len(heads) != len(audits):
        raise ConfigError(f"give one --head per --audit file, in the same order (got {len(heads)} for {len(audits)} files)")
    out: dict[str, tuple[dict[str, Any], str]] = {}
    for i, p in enumerate(audits):
        view, text = audit_file_view(p, heads[i] if heads else None)
        if view["id"] in out:
            raise ConfigError(f"{p}: a second audit file for analysis {view['id']!r} (files are named <analysis>.audit.ndjson)")
        out[view["id"]] = (view, text)
    return out


def local_app(store_url: str | None, audits: list[Path], fleets: list[Path], migrations: list[Path], token: str,
              heads: list[str] | tuple[str, ...] = ()) -> Any:
    """A read-only FastAPI app serving the dashboard over a store and/or audit files with one bearer token.

    The same page and view JSON as the service's ``/ui/``; no write endpoint exists. Files are read once
    (at start); a store is read on every request, and a store's analysis that is not final follows new
    entries (a service writing the store) by a once-a-second poll. Every view is derived from a verified
    chain: a store's against its ``audit_head``, a file's against its ``heads`` entry, or, without one,
    up to its last line only (the view says a truncated tail is not detected). The list shows each
    store analysis' verdict from its verified view (an analysis whose chain does not verify is listed
    with ``integrity_error`` and no summary), never the stored summary row. A file whose name is a
    store analysis' id is refused (a file never stands in for a store analysis).
    """
    import asyncio
    from collections.abc import AsyncIterator

    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    from ..dashboard._routes import add_static_routes
    from ..dashboard._source import listing_of_view, store_view
    from ..store import NotFound, open_existing

    st = None if store_url is None else open_existing(store_url, read_only=True)  # a viewer never writes the store
    files = _file_views(audits, list(heads))
    if st is not None and (clash := sorted(set(files) & {r.id for r in st.list()})):
        raise ConfigError(f"audit file(s) named {', '.join(map(repr, clash))} collide with the store's analyses of that id:"
                          " rename the file (files are named <analysis>.audit.ndjson; the name is not verified)")
    listed: dict[tuple[str, str | None, int], dict[str, Any]] = {}  # store listings by (id, head, entries): a view per change
    fleet, migration = _fleet_views(fleets), _migration_views(migrations)
    bearer = HTTPBearer(auto_error=False)

    def auth(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if cred is None or not secrets.compare_digest(cred.credentials.encode(), token.encode()):
            raise HTTPException(401, "missing or unknown bearer token (the one `deploysignal ui` printed)", {"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="deploysignal ui", docs_url=None, redoc_url=None, openapi_url=None, dependencies=[])
    add_static_routes(app)
    guard = [Depends(auth)]

    @app.exception_handler(NotFound)
    async def _nf(_: Any, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc.args[0])}, status_code=404)

    def _one(aid: str) -> tuple[dict[str, Any], str]:
        if aid in files:
            return files[aid]
        if st is None:
            raise NotFound(f"no analysis {aid!r}")
        return store_view(st, aid)

    @app.get("/v1/analyses", dependencies=guard)
    def analyses() -> list[dict[str, Any]]:
        rows = [listing_of_view(v) for v, _ in files.values()]
        for r in [] if st is None else st.list():
            key = (r.id, r.audit_head, r.n_ticks)
            if key not in listed:
                try:
                    listed[key] = listing_of_view(store_view(st, r.id)[0])
                except NotFound:  # deleted since the list was read
                    continue
            rows.append(listed[key])
        return rows

    @app.get("/v1/analyses/{aid}/view", dependencies=guard)
    def view(aid: str) -> dict[str, Any]:
        return _one(aid)[0]

    @app.get("/v1/analyses/{aid}/audit", dependencies=guard)
    def audit(aid: str) -> Response:
        return Response(_one(aid)[1], media_type="application/x-ndjson")

    @app.get("/v1/analyses/{aid}/events", dependencies=guard)
    async def events(aid: str, from_tick: int = 0, timeout: float = 300.0) -> StreamingResponse:
        """New stored entries of a store's analysis, polled once a second (a service may be writing the
        store): one ``entries`` event per poll that found some, ``id`` = the last entry's sequence number.
        The page re-reads the view on each; the data itself comes only from the view."""
        if st is None or aid in files:
            raise HTTPException(404, f"analysis {aid!r} is a file: no live updates")
        await run_in_threadpool(st.get, aid)

        async def gen() -> AsyncIterator[bytes]:
            nxt, loop = max(0, from_tick), asyncio.get_running_loop()
            deadline = loop.time() + min(max(timeout, 1.0), 3600.0)
            while loop.time() < deadline:  # a client that goes away ends the stream (starlette cancels it)
                n = await run_in_threadpool(st.n_ticks, aid)
                if n > nxt:
                    nxt = n
                    yield f"id: {n - 1}\nevent: entries\ndata: {{\"stored\":{n}}}\n\n".encode()
                else:
                    yield b": keep-alive\n\n"
                await asyncio.sleep(1.0)

        return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/analyses/{aid}/report", dependencies=guard)
    def report_file(aid: str) -> Response:
        from ..dashboard import page_html, report_data
        from ..dashboard._routes import REPORT_HEADERS, unverified_detail

        one = _one(aid)
        if (why := unverified_detail(one[0])) is not None:
            raise HTTPException(409, why)
        return Response(page_html(report_data([one])), media_type="text/html",
                        headers={**REPORT_HEADERS, "Content-Disposition": f'attachment; filename="{aid}.report.html"'})

    @app.get("/v1/dashboard/sources", dependencies=guard)
    def sources() -> dict[str, list[str]]:
        return {"fleet": list(fleet), "migration": list(migration)}

    @app.get("/v1/dashboard/fleet/{name}", dependencies=guard)
    def fleet_one(name: str) -> dict[str, Any]:
        if name not in fleet:
            raise HTTPException(404, f"no fleet {name!r}")
        return fleet[name]

    @app.get("/v1/dashboard/migration/{name}", dependencies=guard)
    def migration_one(name: str) -> dict[str, Any]:
        if name not in migration:
            raise HTTPException(404, f"no migration {name!r}")
        return migration[name]

    return app


def ui(
    store: Optional[str] = typer.Option(None, envvar="DEPLOYSIGNAL_STORE", help="Store URL (sqlite:///path.db or postgresql://...) whose analyses to show (opened read-only)."),
    audit: list[Path] = typer.Option([], "--audit", help="Audit log file (GET /v1/analyses/{id}/audit or gate --audit; named <analysis>.audit.ndjson); repeatable."),
    head: list[str] = typer.Option([], "--head", help="The published audit_head of each --audit file, in the same order (detects a truncated tail; without it the page says the end is not checked); repeatable."),
    fleet: list[Path] = typer.Option([], "--fleet", help="`deploysignal fleet observe --jsonl` output; repeatable."),
    migration: list[Path] = typer.Option([], "--migration", help="`deploysignal migrate run --json` output; repeatable."),
    host: str = typer.Option("127.0.0.1", help="Bind address (keep it local: the page is protected by one generated token)."),
    port: int = typer.Option(8090, min=0, max=65535, help="TCP port."),
    token_file: Optional[Path] = typer.Option(None, help="Read the bearer token from this file instead of generating one."),
) -> None:
    """Serve the dashboard over a local store and/or audit, fleet and migration files (read-only).

    Prints the address and a generated read token; paste the token into the page once (kept in the
    tab's session storage, sent as a bearer header, never in a URL)."""
    import uvicorn

    if store is None and not (audit or fleet or migration):
        err.print("[red]error[/red]: give --store, or --audit / --fleet / --migration files")
        raise typer.Exit(2)
    try:
        token = token_file.read_text(encoding="utf-8").strip() if token_file is not None else secrets.token_urlsafe(24)
        if not token:
            raise ConfigError(f"{token_file}: empty token file")
        app = local_app(store, audit, fleet, migration, token, head)
    except (DeploySignalError, OSError) as exc:
        err.print(f"[red]error[/red]: {escape(str(exc))}")
        raise typer.Exit(2) from None
    err.print(f"dashboard: http://{host}:{port}/ui/")
    if token_file is None:
        err.print(f"read token (paste it into the page once): {token}")
    # an open page holds an event stream: stop after 3 s on Ctrl-C / SIGTERM instead of waiting for it
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)


def report(
    analysis: Optional[str] = typer.Argument(None, help="Analysis id (with --store or --url)."),
    store: Optional[str] = typer.Option(None, envvar="DEPLOYSIGNAL_STORE", help="Store URL to read the analysis from (opened read-only)."),
    audit: Optional[Path] = typer.Option(None, "--audit", help="Audit log file instead of a store (no signal values: an audit log holds their SHA-256 only)."),
    head: Optional[str] = typer.Option(None, help="With --audit: the published audit_head the file must end at (detects a truncated tail; without it the report says the end is not checked)."),
    analysis_id: Optional[str] = typer.Option(None, "--id", help="With --audit: the analysis id to show (default: the file name less .audit.ndjson / .ndjson); not verified."),
    url: Optional[str] = typer.Option(None, help="Service address (http://host:port): fetch GET /v1/analyses/{id}/report."),
    token_file: Optional[Path] = typer.Option(None, envvar="DEPLOYSIGNAL_TOKEN_FILE", help="With --url: file holding a read token."),
    fleet: list[Path] = typer.Option([], "--fleet", help="Also embed a fleet page from `fleet observe --jsonl` output; repeatable."),
    migration: list[Path] = typer.Option([], "--migration", help="Also embed a migration page from `migrate run --json` output; repeatable."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="HTML file to write (default: <analysis>.report.html)."),
) -> None:
    """Write one self-contained HTML report (inline script, styles and data; opens offline).

    The same views as the dashboard, from an analysis in a store, an audit file, or the service; exit 1
    without writing when the audit chain does not verify."""
    from ..dashboard import audit_file_view, page_html, report_data, store_view

    try:
        given = [n for n, v in (("--store", store), ("--audit", audit), ("--url", url)) if v is not None]
        if len(given) > 1:
            raise ConfigError(f"give one of --store, --audit, --url (got {', '.join(given)})")
        if not given and not (fleet or migration):
            raise ConfigError("give --store ANALYSIS, --audit FILE or --url ANALYSIS (or only --fleet / --migration files)")
        if (store is not None or url is not None) and analysis is None:
            raise ConfigError("--store and --url need the ANALYSIS id")
        if url is not None:
            html = _fetch_report(url, analysis or "", token_file)
            if html is None:
                raise typer.Exit(1)
            target = output or Path(f"{analysis}.report.html")
            target.write_text(html, encoding="utf-8")
            err.print(f"report written: {target}")
            return
        views: list[tuple[dict[str, Any], str]] = []
        if store is not None:
            from ..store import open_existing

            st = open_existing(store, read_only=True)
            try:
                views.append(store_view(st, analysis or ""))
            finally:
                st.close()
        elif audit is not None:
            views.append(audit_file_view(audit, head, analysis_id))
        if (head is not None or analysis_id is not None) and audit is None:
            raise ConfigError("--head and --id go with --audit")
        for v, _ in views:
            if not v["verified"]["ok"]:
                err.print(f"[red]audit chain does not verify[/red] at line {v['verified']['bad_line']}: {v['verified']['reason']}; no report written")
                raise typer.Exit(1)
            if v["verified"].get("note"):
                err.print(f"[yellow]warning[/yellow]: {v['id']}: audit chain verified but {v['verified']['note']} (pass --head)")
        data = report_data(views, _fleet_views(fleet), _migration_views(migration))
        name = views[0][0]["id"] if views else next(iter(data["fleet"] or data["migration"]))
        target = output or Path(f"{name}.report.html")
        target.write_text(page_html(data), encoding="utf-8")
    except (DeploySignalError, OSError) as exc:
        err.print(f"[red]error[/red]: {escape(str(exc))}")
        raise typer.Exit(2) from None
    err.print(f"report written: {target}")


def _fetch_report(url: str, analysis: str, token_file: Path | None) -> str | None:
    """The service's report of ``analysis``, or None (said on stderr) when the service answers that its
    audit chain or stored rows do not verify (409); :class:`ConfigError` for any other failure."""
    import httpx
    from urllib.parse import quote

    if token_file is None:
        raise ConfigError("--url needs --token-file (a read token of the service)")
    token = token_file.read_text(encoding="utf-8").strip()
    try:
        r = httpx.get(f"{url.rstrip('/')}/v1/analyses/{quote(analysis, safe='')}/report", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    except httpx.HTTPError as exc:
        raise ConfigError(f"{url}: cannot fetch the report: {exc}") from None
    if r.status_code != 200:
        try:
            detail = r.json().get("detail", r.text[:200])
        except ValueError:
            detail = r.text[:200]
        if r.status_code == 409:
            err.print(f"[red]the service says the analysis does not verify[/red]: {escape(str(detail))}; no report written")
            return None
        raise ConfigError(f"{url}: {r.status_code} {detail}")
    return r.text


def register(app: typer.Typer) -> None:
    """Add ``ui`` and ``report`` to the main ``deploysignal`` app."""
    app.command("ui")(ui)
    app.command("report")(report)

