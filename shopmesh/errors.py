"""Errors the domain raises, in the domain's words; shopmesh.rpc maps them to gRPC codes.

Plain Python on purpose: domain code raises these without knowing about gRPC.
"""

from __future__ import annotations


class DomainError(Exception):
    """A request the domain refuses. The message is shown to the caller."""


class InvalidArgument(DomainError):
    """Input that passes the contract's rules but not the domain's (a bad page token)."""


class NotFound(DomainError):
    pass


class AlreadyExists(DomainError):
    pass


class FailedPrecondition(DomainError):
    pass


class PermissionDenied(DomainError):
    pass


class Unauthenticated(DomainError):
    pass


class Unavailable(DomainError):
    """A dependency could not be reached; the caller may retry."""


class DeadlineExceeded(DomainError):
    """A dependency did not answer within the caller's deadline."""
