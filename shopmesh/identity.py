"""Who is calling: the identity the gateway puts in metadata after verifying the JWT.

The gateway strips any client-sent copy of these headers, so inside the mesh they can be
trusted. Services calling each other say role "service".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from shopmesh.errors import PermissionDenied, Unauthenticated

USER_ID_HEADER = "x-shop-user-id"
ROLE_HEADER = "x-shop-role"


class Role(StrEnum):
    CUSTOMER = "customer"
    ADMIN = "admin"
    SERVICE = "service"


@dataclass(frozen=True)
class Caller:
    user_id: str
    role: Role

    @property
    def is_privileged(self) -> bool:
        return self.role in (Role.ADMIN, Role.SERVICE)

    def require_admin(self) -> None:
        if self.role is not Role.ADMIN:
            raise PermissionDenied("this operation needs the admin role")

    def may_read(self, owner_id: str) -> bool:
        return self.is_privileged or owner_id == self.user_id


def caller_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Caller:
    """The verified caller, or Unauthenticated when the gateway sent none."""
    values = {key: value for key, value in metadata or () if isinstance(value, str)}
    user_id = values.get(USER_ID_HEADER, "")
    role = values.get(ROLE_HEADER, Role.CUSTOMER.value)
    if not user_id:
        raise Unauthenticated(f"missing caller identity ({USER_ID_HEADER})")
    try:
        return Caller(user_id=user_id, role=Role(role))
    except ValueError:
        raise Unauthenticated(f"unknown role {role!r}") from None


def service_metadata(instance: str) -> tuple[tuple[str, str], ...]:
    """Metadata for a call one service makes to another on its own behalf."""
    return ((USER_ID_HEADER, instance), (ROLE_HEADER, Role.SERVICE.value))
