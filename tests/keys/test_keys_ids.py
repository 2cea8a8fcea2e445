"""keys.ids: what an identity id and a digest id look like, and nothing else."""

from __future__ import annotations

from keys.encoding import b64url_encode
from keys.identity import Identity
from keys.ids import is_digest_id, is_identity_id


def test_real_ids_are_recognised() -> None:
    identity = Identity.create("Someone", "delegation")
    assert is_identity_id(identity.id)
    assert is_digest_id(b64url_encode(bytes(range(32))))
    assert is_digest_id(b64url_encode(b"\xff" * 32))


def test_anything_else_is_not_an_id() -> None:
    identity_id = Identity.create("Someone", "delegation").id
    digest_id = b64url_encode(bytes(32))
    for value in (identity_id.upper(), identity_id[:-1], identity_id + "a",
                  identity_id[:-1] + "1", identity_id[:-1] + "\x00", identity_id + "\n",
                  "", None, 7, identity_id.encode()):
        assert not is_identity_id(value), value
    for value in (digest_id[:-1], digest_id + "A", digest_id[:-1] + "=", digest_id[:-1] + "+",
                  digest_id[:-1] + "\x00", digest_id[:-1] + "\u00e9", digest_id + "\n", "",
                  None, digest_id.encode()):
        assert not is_digest_id(value), value
