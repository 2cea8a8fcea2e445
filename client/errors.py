"""Errors raised by :mod:`client`.

Every class derives from :class:`keys.errors.BackchannelError`, so the CLI turns any
of them into one line on stderr and exit status 1. Messages are written for the
officer at the keyboard: they say what is wrong and, where there is one, the command
that fixes it. They never contain a name from a list, a passphrase, a private key or
a token.
"""

from __future__ import annotations

from keys.errors import BackchannelError


class ClientError(BackchannelError):
    """Base class for errors raised by the delegation client."""


# --- the local profile -------------------------------------------------------------

class ProfileError(ClientError):
    """Something is wrong with the local profile directory."""


class NoProfile(ProfileError):
    """There is no profile yet in this directory."""

    def __init__(self, home: object) -> None:
        super().__init__(f"no profile in {home}: create one with "
                         "backchannel init --name NAME (or set BACKCHANNEL_HOME)")


class ProfileExists(ProfileError):
    """``init`` refuses to overwrite an identity."""

    def __init__(self, home: object) -> None:
        super().__init__(f"a profile already exists in {home}; use another directory "
                         "with --home DIR or BACKCHANNEL_HOME to create a second one")


class StoreCorrupt(ProfileError):
    """A file of the encrypted local store does not decrypt or does not parse."""


class NotRegistered(ProfileError):
    """The profile has not joined a node yet."""

    def __init__(self) -> None:
        super().__init__("this profile has not joined a node yet: "
                         "run backchannel register INVITATION")


class AlreadyRegistered(ProfileError):
    """The profile is already a member of a node."""


class BadSetting(ProfileError):
    """An environment variable or option has a value this program does not accept."""


# --- contacts ----------------------------------------------------------------------

class ContactError(ClientError):
    """A problem with the contact list."""


class UnknownContact(ContactError):
    def __init__(self, alias: str, *, near: str | None = None) -> None:
        if near is not None:
            # A slip of the shift key, not a new contact: adding the card again under
            # the typed alias would be refused anyway (one alias per identity).
            text = f"unknown contact {alias!r}; did you mean {near!r}? (aliases are exact)"
        else:
            text = (f"unknown contact {alias!r}: add it with backchannel contacts add FILE "
                    f"--alias {alias} (backchannel contacts list shows the aliases)")
        super().__init__(text)
        self.alias = alias


class ContactKeyChanged(ContactError):
    """The contact's card now carries a different key than the one verified before.
    Until the officer compares the new safety number, nothing is sent to it."""

    def __init__(self, alias: str) -> None:
        super().__init__(
            f"contact {alias!r} has a NEW KEY since it was added or verified: compare the "
            f"new safety number with them out of band, then run "
            f"backchannel contacts verify {alias}")
        self.alias = alias


class BadAlias(ContactError):
    """An alias that is not a short identifier."""


class DuplicateContact(ContactError):
    """The same identity is already in the contact list under another alias."""


# --- bodies ------------------------------------------------------------------------

class BodyError(ClientError):
    """A file to send (name list or note) is not acceptable.

    ``problems`` lists every problem found (each prefixed with its line or entry
    number); the message shows the first one and how many more there are."""

    def __init__(self, problems: list[str], *, source: str = "") -> None:
        self.problems = list(problems)
        first = problems[0] if problems else "invalid content"
        more = len(problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''}: run backchannel " \
                 f"namelist check FILE to see them all)" if more > 0 else ""
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{first}{suffix}")


class NotANameList(BodyError):
    """The file is not a name list at all (wrong format, not text, no entries)."""


class NoListFound(NotANameList):
    """Readable text, but no name list in it (no header of list columns, JSON of
    another shape): perhaps free text meant as a note."""


class InvalidNameList(BodyError):
    """The file is a name list but some entries are invalid."""


# --- invitations and nodes ---------------------------------------------------------

class InvalidInvitation(ClientError):
    """The invitation string is malformed (it may have been cut while copying)."""


class InvitationExpired(ClientError):
    """The invitation is past its expiry; ask the node's operator for a new one."""


class NodeError(ClientError):
    """Base class for problems talking to a node."""


class NodeUnreachable(NodeError):
    """The node could not be reached (network down, wrong address, node stopped)."""


class NodeKeyMismatch(NodeError):
    """The node presents a key other than the one pinned when joining it.

    Either the operator replaced the node's key, or someone is impersonating the
    node. Nothing is sent until the operator confirms the new fingerprint."""


class NodeProtocolError(NodeError):
    """The node answered something that does not follow the protocol."""


class RelayRejected(NodeError):
    """The node refused a request with an RFC 9457 problem document.

    ``status`` is the HTTP status, ``slug`` the last part of the problem ``type``."""

    def __init__(self, message: str, *, status: int, slug: str) -> None:
        super().__init__(message)
        self.status = status
        self.slug = slug


class Unauthorized(RelayRejected):
    """The node did not accept this client's signature (clock, revoked membership)."""


class Forbidden(RelayRejected):
    """The node forbids this request (e.g. a recipient that is not a member)."""


class NotFound(RelayRejected):
    """The node does not have what was asked for (or does not show it to us)."""


class Conflict(RelayRejected):
    """The request conflicts with what the node already holds."""


class RateLimited(RelayRejected):
    """Too many requests; try again later."""


class InvitationRejected(RelayRejected):
    """The node refused the invitation (used, expired or unknown)."""


class TooLargeForNode(RelayRejected):
    """The message is larger than the node accepts."""


# --- messages and receipts ---------------------------------------------------------

class MessageError(ClientError):
    """A message cannot be shown or processed."""


class UnknownMessage(MessageError):
    def __init__(self, envelope_id: str) -> None:
        super().__init__(f"no message {envelope_id!r} in this profile or in the node's "
                         "inbox: check the id with backchannel inbox")


class BundleInvalid(ClientError):
    """A receipt bundle or statement failed offline verification."""
