"""Exceptions for negotiation documents (proposals, agreements, handover records).

They extend the :mod:`keys.errors` hierarchy, so the CLI's one-line error handler
shows them unchanged. Each message names the message or document at fault and what
the officer can do about it; none ever contains a name from a list.
"""

from __future__ import annotations

from .errors import BackchannelError, DecodeError, VerificationError


class NegotiationError(BackchannelError):
    """Base class for errors about proposals, agreements and handover records."""


class InvalidTerms(NegotiationError, DecodeError):
    """The terms of a proposal are inconsistent (for example the agreed counts do not
    add up to the number of entries in the referenced lists, or the time window ends
    before it starts). Correct the proposal and sign it again."""


class ThreadBroken(NegotiationError, VerificationError):
    """The messages do not form one unbroken negotiation thread: a message is missing,
    out of order, answers the wrong message, or was written by someone who is not a
    party. Do not rely on this sequence; ask the other side for the complete thread."""


class NotAcceptable(NegotiationError):
    """This proposal cannot be accepted (or answered): it was superseded by a later
    message, it has expired, the thread is already closed, or it is your own
    proposal. Answer the latest proposal instead, or make a new one."""


class TermsMismatch(NegotiationError, VerificationError):
    """A signature or a document is about a different version of the terms than the
    one in hand (altered terms, or a co-signature over an earlier proposal). The two
    versions must not be mixed: ask the signer to sign this exact version."""


class ListMismatch(NegotiationError, VerificationError):
    """A disclosed name list does not match the digest named in the proposal: it is not
    the list that was agreed (or the salt is wrong)."""


class HandoverRejected(NegotiationError):
    """A handover record refers to entries that are not in the agreed lists (an unknown
    list, the other side's list, an index past the end, or the same entry twice), or
    does not belong to the agreement it is checked against."""


class UnknownSigner(NegotiationError):
    """A required signer's public key is not known here: add that identity's card to
    your contacts (or include its key in the exported bundle) and try again."""


class NotASigner(NegotiationError):
    """This identity is not named in the document as a party, guarantor or witness, so
    its signature would not count. Check that you are signing the right document."""
