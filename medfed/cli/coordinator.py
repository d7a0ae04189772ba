"""``medfed coordinator``: run the federation's coordinator; ``medfed admin``: revoke, audit."""

from __future__ import annotations

from pathlib import Path

import click

_KIT = click.option(
    "--kit",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    envvar="MEDFED_KIT",
    help="Startup kit folder from `medfed provision`.",
)


@click.group()
def coordinator() -> None:
    """The coordinator: serves the federation's API over HTTPS and drives its jobs."""


@coordinator.command()
@_KIT
@click.option("--db", default=None, help="SQLAlchemy URL [sqlite:///STATE/coordinator.db].")
@click.option(
    "--state",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the database and blobs [KIT/state].",
)
@click.option("--host", default=None, help="Address to listen on [from the kit].")
@click.option("--port", type=int, default=None, help="Port to listen on [from the kit].")
@click.option("--insecure", is_flag=True, help="Plain HTTP, for development only.")
def start(
    kit: Path,
    db: str | None,
    state: Path | None,
    host: str | None,
    port: int | None,
    insecure: bool,
) -> None:
    """Start the coordinator; jobs that were running resume from their last round."""
    from urllib.parse import urlparse

    from rich.markup import escape

    from medfed.cli.console import err, warn
    from medfed.federation.coordinator.server import Coordinator, CoordinatorSettings
    from medfed.federation.identity.kits import load_coordinator_kit

    k = load_coordinator_kit(kit)
    url = urlparse(k.coordinator_url)
    if insecure:
        warn(
            "--insecure: no TLS. Requests are still signed, but anyone on the network can "
            "read models and updates. Never use this with real data."
        )
    settings = CoordinatorSettings(
        consortium=k.consortium,
        ca_cert_pem=k.ca_pem,
        state_dir=state or kit / "state",
        db_url=db,
        host=host or url.hostname or "127.0.0.1",
        port=port or url.port or 8443,
        tls_cert=k.tls_cert_path,
        tls_key=k.tls_key_path,
        insecure=insecure,
    )
    _check_port_free(settings.host, settings.port)
    coord = Coordinator(settings)
    scheme = "http" if insecure else "https"
    err.print(
        f"[bold]medfed coordinator[/] for [cyan]{escape(k.consortium)}[/] on "
        f"{scheme}://{escape(settings.host)}:{settings.port} · state "
        f"{escape(str(settings.state_dir))}"
    )
    coord.serve()


def _check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` as the server will (and let go), so that a busy port is one sentence
    before the serving banner, not an error after it."""
    import errno
    import socket

    from medfed.errors import UsageError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is already in use (another coordinator or program is "
                "listening there): stop it, or start this one with --port"
            ) from None
        if exc.errno == errno.EACCES:
            raise UsageError(
                f"port {port} on {host} needs privileges to listen on: choose --port 1024 or above"
            ) from None
        raise UsageError(
            f"cannot listen on {host} port {port}: {exc.strerror or exc}; check --host and --port"
        ) from None


@click.group()
def admin() -> None:
    """Federation administration: revoke identities, read the audit log."""


@admin.command()
@_KIT
@click.argument("name")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.option(
    "--force",
    is_flag=True,
    help="Also revoke a name that never contacted this coordinator (ahead of its first contact).",
)
def revoke(kit: Path, name: str, reason: str, force: bool) -> None:
    """Refuse every further request from participant NAME (no one else is re-provisioned).

    A NAME that never contacted this coordinator is most likely a typo: it is refused, and
    nothing is revoked, unless --force revokes it ahead of its first contact.
    """
    import difflib

    from rich.markup import escape

    from medfed.cli.console import out, warn
    from medfed.cli.remote import client
    from medfed.errors import UsageError

    def never_seen(seen: list[str], revoked: bool) -> UsageError:
        close = difflib.get_close_matches(name, seen, n=1)
        hint = f"did you mean {close[0]!r}? " if close else "a typo? "
        done = (
            "it is revoked ahead of its first contact anyway" if revoked else "nothing was revoked"
        )
        return UsageError(
            f"{name!r} never contacted this coordinator ({hint}{done}); to revoke a "
            "participant before its first contact, pass --force"
        )

    with client(kit) as c:
        rows = c.get_json("/v1/participants")
        seen = [str(r["name"]) for r in rows if r.get("role") != "unknown"]
        if name not in seen and not force:
            raise never_seen(seen, revoked=False)
        reply = c.post_json(f"/v1/participants/{name}/revoke", {"reason": reason})
    if not reply.get("known", True):
        if not force:  # the list said otherwise; the revocation's own answer counts
            raise never_seen(seen, revoked=True)
        warn(f"{name} never contacted this coordinator: it is revoked ahead of its first contact")
    out.print(f"revoked [bold]{escape(name)}[/]: every further request from it is refused")


@admin.command()
@_KIT
@click.option("--limit", type=int, default=50, show_default=True)
def audit(kit: Path, limit: int) -> None:
    """Show the coordinator's audit log (newest last)."""
    import time

    from rich import box
    from rich.table import Table

    from medfed.cli.console import out, text
    from medfed.cli.remote import client

    with client(kit) as c:
        rows = c.get_json(f"/v1/audit?limit={limit}")
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("time", "who", "action", "target", "outcome", "detail"):
        table.add_column(col)
    for r in rows:  # the coordinator's text, some of it another party's: never markup
        when = time.strftime("%H:%M:%S", time.localtime(r["time"]))
        table.add_row(
            when,
            text(f"{r['principal']} ({r['role']})"),
            text(r["action"]),
            text(r["target"]),
            text(r["outcome"]),
            text(str(r["detail"])[:60]),
        )
    out.print(table)
