"""``medfed provision``: the federation CA and one startup kit per participant."""

from __future__ import annotations

from pathlib import Path

import click

ROLE_CHOICES = ("site", "admin", "researcher")


@click.command()
@click.argument("consortium", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the CA and the kits [next to CONSORTIUM, named after the consortium].",
)
@click.option("--add", "add", metavar="NAME", default=None, help="Issue one more kit, for NAME.")
@click.option(
    "--role",
    type=click.Choice(ROLE_CHOICES),
    default=None,
    help="The new participant's role (with --add).",
)
def provision(consortium: Path, out: Path | None, add: str | None, role: str | None) -> None:
    """Create a federation CA and a startup kit for everyone listed in CONSORTIUM.toml.

    Give each kit folder to its owner only: the coordinator's to the coordinator's host, each
    hospital's to that hospital. With --add NAME --role ROLE, issue one more kit with the same
    CA; no one else is re-provisioned.
    """
    from rich import box
    from rich.table import Table

    from medfed.cli.console import out as console, text, warn
    from medfed.federation.identity import pki

    if (add is None) != (role is None):
        raise pki.ProvisionError("--add NAME and --role ROLE go together; give both or neither")
    if add is not None and role is not None:
        folder = out if out is not None else _default_out(consortium)
        kits = [pki.KitInfo(add, role, pki.add_participant(folder, add, role))]
        title, caption, ca_key = "New startup kit", f"CA: {folder / 'ca'}", folder / "ca" / "ca.key"
    else:
        result = pki.provision(consortium, out)
        kits, ca_key = list(result.kits), result.ca_key
        title = f"Startup kits for {result.consortium}"
        caption = f"coordinator URL: {result.coordinator_url}"
    table = Table(title=text(title), caption=text(caption), box=box.SIMPLE_HEAD)
    table.add_column("participant", no_wrap=True)
    table.add_column("role")
    table.add_column("folder", overflow="fold")
    for kit in kits:
        table.add_row(text(kit.name), text(kit.role), text(kit.path))
    console.print(table)
    warn(
        f"{ca_key} can issue identities for anyone: keep it offline (it is needed only to add "
        "participants) and give each kit folder to its owner only."
    )


def _default_out(consortium: Path) -> Path:
    """The folder ``provision`` wrote by default: named after the consortium, next to its file."""
    import tomllib

    from medfed.federation.identity.pki import ProvisionError, validate_name

    try:
        name = tomllib.loads(consortium.read_text(encoding="utf-8")).get("name")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise ProvisionError(
            f"{consortium} is not a readable consortium.toml; pass --out"
        ) from None
    return consortium.parent / validate_name(name, "consortium name")
