"""Exceptions raised by :mod:`keys`.

Two families, kept apart on purpose:

* :class:`DecodeError` and its subclasses: the *input* is malformed (wrong size,
  unknown version, bad base64...). Safe to show in detail; nothing secret was used.
* :class:`VerificationError` / :class:`OpenError`: a cryptographic check failed.
  Their messages are deliberately uniform so that they reveal nothing about which
  step failed (no oracle).

Messages are written so that a delegation's officer can act on them.
"""

from __future__ import annotations


class BackchannelError(Exception):
    """Base class for every error this project raises on purpose."""


class DecodeError(BackchannelError, ValueError):
    """The data is not a well-formed Backchannel object (it may be damaged, or
    produced by a program that does not follow the protocol)."""


class TooLarge(DecodeError):
    """The data exceeds a size limit; it was rejected before being parsed."""


class UnsupportedVersion(DecodeError):
    """The object declares a version or suite this program does not support.
    Upgrading Backchannel may help; otherwise ask the sender which version they use."""


class InvalidKey(DecodeError):
    """A public key is malformed or weak (for example an X25519 low-order point)."""


class VerificationError(BackchannelError):
    """A signature or a signing policy did not verify. The object must not be trusted."""


class PolicyNotMet(VerificationError):
    """The signatures are valid, but the signers required by the policy are missing.

    ``present`` and ``missing`` name the identity ids so that a caller can report
    which co-signatures are still outstanding.
    """

    def __init__(self, message: str, present: frozenset[str], missing: frozenset[str]) -> None:
        super().__init__(message)
        self.present = present
        self.missing = missing


class Expired(VerificationError):
    """The object is outside its validity period (expired, or created in the future)."""


class ClassicalRecipient(BackchannelError):
    """A recipient has only a classical (X25519) key and the sender did not allow it."""


class OpenError(BackchannelError):
    """A sealed message could not be opened.

    Deliberately uniform: it does not say whether the message was not addressed to
    you, was altered in transit, or was not signed by its claimed sender.
    """

    def __init__(self) -> None:
        super().__init__(
            "this message could not be opened: it was not sealed to this identity, "
            "or it was altered, or its signature does not match its sender"
        )


class KeystoreError(BackchannelError):
    """Base class for keystore problems."""


class WrongPassphrase(KeystoreError):
    """The passphrase does not unlock this keystore. Check the keyboard layout and
    caps lock; the passphrase is case-sensitive."""

    def __init__(self) -> None:
        super().__init__("wrong passphrase for this keystore")


class KeystoreCorrupt(KeystoreError):
    """The keystore file is truncated or damaged. Restore it from a backup."""


class WeakKeystoreParameters(KeystoreError):
    """The keystore uses key-derivation parameters below the accepted floor; it may
    have been tampered with. Restore it from a backup."""


class NotTheOwner(KeystoreError):
    """A keystore would be rewritten by a user other than its owner: the new file
    would belong to that user, and the owner (a node's service account) could no
    longer read it."""


class InsecurePermissions(KeystoreError):
    """The keystore file or its directory can be read by other users of this machine.
    Fix with ``chmod 600`` on the file and ``chmod 700`` on its directory."""
