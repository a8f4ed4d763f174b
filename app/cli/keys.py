"""``fintask keys rotate``: every raw blob re-encrypted under the current blob key.

How a key is rotated (``BLOB_KEYS`` lists ``ID:BASE64_KEY`` entries; the first encrypts):

1. add the new key at the end of ``BLOB_KEYS`` everywhere: every process can now decrypt it;
2. move it first: new blobs are encrypted with it;
3. ``fintask keys rotate``: the blobs under older keys (and any kept in clear by a release
   before blobs were encrypted) are re-encrypted with it; it ends saying how many are left;
4. once none are, remove the old key.
"""

from __future__ import annotations

import click

from app.cli.common import JSON_OPTION, cli_identity, print_json
from app.control import audit as audit_trail
from app.db.session import transaction
from app.raw_blobs import ROTATE_BATCH, Rotation, rotate
from app.settings import load_settings


@click.group()
def keys() -> None:
    """Raw-blob encryption keys (BLOB_KEYS): re-encrypt every blob under the current one."""


@keys.command("rotate")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=ROTATE_BATCH,
    show_default=True,
    help="blobs re-encrypted per transaction",
)
@JSON_OPTION
def keys_rotate(batch_size: int, as_json: bool) -> None:
    """Re-encrypt every raw blob not under the current key (the first of BLOB_KEYS).

    One transaction per batch: stopped half-way, it keeps what it did, and the next run goes
    on with the rest. A blob it cannot decrypt is left as it is and named; the command then
    fails, as it does when blobs under other keys remain.
    """
    keyring = load_settings().blob_keyring()

    def progress(rotation: Rotation) -> None:
        if not as_json:
            moved = sum(rotation.moved.values())
            click.echo(f"batch {rotation.batches}: {moved} blob(s) re-encrypted so far")

    rotation = rotate(keyring, batch_size=batch_size, on_batch=progress)
    with transaction() as session:
        audit_trail.record(
            session,
            who=cli_identity(),
            action="keys.rotate",
            target=rotation.key_id,
            count=sum(rotation.moved.values()),
            detail={"from": dict(rotation.moved), "remaining": rotation.remaining},
        )
    if as_json:
        print_json(rotation.as_dict())
    else:
        _report(rotation)
    if rotation.remaining:
        raise SystemExit(1)


def _report(rotation: Rotation) -> None:
    moved = ", ".join(f"{count} from {key}" for key, count in sorted(rotation.moved.items()))
    click.echo(
        f"re-encrypted {sum(rotation.moved.values())} blob(s) under key {rotation.key_id!r}"
        + (f" ({moved})" if moved else "")
    )
    for reason in rotation.unreadable.values():
        click.echo(f"left as it is: {reason}", err=True)
    if rotation.remaining:
        click.echo(
            f"{rotation.remaining} blob(s) are not under {rotation.key_id!r}: keep the other keys"
            " until they are (blobs written meanwhile under another key: run it again once"
            " every process encrypts with the current one)",
            err=True,
        )
    else:
        click.echo(f"every blob is under {rotation.key_id!r}: the other keys can be removed")
