"""A private identity: the signing key, the encryption key and the current card."""

from __future__ import annotations

from datetime import timedelta

from . import dsse
from .card import CARD_TYPE, Card, HomeNode, card_payload, encode_card_payload, load_card
from .clock import SYSTEM_CLOCK, Clock, Random, system_random
from .ed25519 import SigningKey
from .kem import SUITE_HYBRID, EncryptionPrivateKey

#: Cards are re-issued when a delegation's node changes; two years bounds the
#: damage of a card that leaked with a stolen laptop's disk image.
DEFAULT_CARD_VALIDITY = timedelta(days=730)


class Identity:
    """Everything secret about one identity. ``repr`` shows only the public id."""

    __slots__ = ("card", "encryption_key", "signing_key")

    def __init__(self, signing_key: SigningKey, encryption_key: EncryptionPrivateKey,
                 card: Card) -> None:
        if card.verify_key != signing_key.public:
            raise ValueError("card does not belong to this signing key")
        if card.encryption != encryption_key.public:
            raise ValueError("card does not carry this encryption key")
        self.signing_key = signing_key
        self.encryption_key = encryption_key
        self.card = card

    @property
    def id(self) -> str:
        return self.signing_key.id

    @classmethod
    def create(cls, name: str, role: str, *, suite: str = SUITE_HYBRID,
               home: HomeNode | None = None, clock: Clock = SYSTEM_CLOCK,
               random: Random = system_random,
               validity: timedelta = DEFAULT_CARD_VALIDITY) -> Identity:
        signing = SigningKey.generate(random)
        encryption = EncryptionPrivateKey.generate(suite, random)
        card = issue_card(signing, encryption, name=name, role=role, home=home,
                          clock=clock, validity=validity)
        return cls(signing, encryption, card)

    def reissue(self, *, name: str | None = None, home: HomeNode | None = None,
                clock: Clock = SYSTEM_CLOCK,
                validity: timedelta = DEFAULT_CARD_VALIDITY) -> Identity:
        """A new card for the same keys (e.g. after joining a node)."""
        card = issue_card(self.signing_key, self.encryption_key,
                          name=name or self.card.name, role=self.card.role,
                          home=home if home is not None else self.card.home,
                          clock=clock, validity=validity)
        return Identity(self.signing_key, self.encryption_key, card)

    def __repr__(self) -> str:
        return f"Identity(id={self.id!r}, role={self.card.role!r})"


def issue_card(signing: SigningKey, encryption: EncryptionPrivateKey, *, name: str,
               role: str, home: HomeNode | None, clock: Clock, validity: timedelta) -> Card:
    now = clock.now()
    payload = card_payload(name=name, role=role, verify_key=signing.public,
                           encryption=encryption.public, created=now, expires=now + validity,
                           home=home)
    envelope = dsse.sign(CARD_TYPE, encode_card_payload(payload), signing)
    # Round-trip through the public loader so that we never issue a card we would
    # refuse to read (bad name length, unknown role...).
    return load_card(envelope, now=now)
