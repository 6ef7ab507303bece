"""What a staff member may see, as SQL predicates built once per request.

A grid worker sees the households of their grid(s), community staff those of their
community(ies), an admin all of them. Every console query that touches residents, devices,
gateways or alerts composes one of these predicates into its WHERE clause, so scoping is
enforced by the database query itself, for pages and API alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from lovekey.vocabulary import ConsoleRole


@dataclass(frozen=True, slots=True)
class Scope:
    role: ConsoleRole
    grid_ids: tuple[str, ...] = ()
    community_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # a role read from the database or typed on the command line arrives as a plain string
        try:
            object.__setattr__(self, "role", ConsoleRole(self.role))
        except ValueError as exc:
            raise ValueError(f"unknown role {self.role!r}") from exc
        if self.role == ConsoleRole.GRID_WORKER and (not self.grid_ids or self.community_ids):
            raise ValueError("a grid worker is scoped to one or more grids, and only grids")
        if self.role == ConsoleRole.COMMUNITY_STAFF and (not self.community_ids or self.grid_ids):
            raise ValueError("community staff are scoped to communities, and only communities")
        if self.role == ConsoleRole.ADMIN and (self.grid_ids or self.community_ids):
            raise ValueError("an admin sees everything and takes no grid or community")

    @property
    def is_admin(self) -> bool:
        return self.role == ConsoleRole.ADMIN

    @property
    def params(self) -> dict[str, list[str]]:
        """The query parameters the predicates refer to (merge them into the query's own)."""
        if self.role == ConsoleRole.ADMIN:
            return {}
        ids = self.grid_ids if self.role == ConsoleRole.GRID_WORKER else self.community_ids
        return {"scope_ids": list(ids)}

    def household(self, alias: str) -> sql.Composable:
        """A predicate true for the rows of `household AS alias` this staff member may see.
        It uses the named parameter `%(scope_ids)s` (see `params`)."""
        if self.role == ConsoleRole.ADMIN:
            return sql.SQL("TRUE")
        column = "grid_id" if self.role == ConsoleRole.GRID_WORKER else "community_id"
        return sql.SQL("{} = ANY(%(scope_ids)s::text[])").format(sql.Identifier(alias, column))

    def gateway(self, gateway_id: sql.Composable) -> sql.Composable:
        """True when the gateway serves at least one household in scope."""
        if self.role == ConsoleRole.ADMIN:
            return sql.SQL("TRUE")
        return sql.SQL(
            "EXISTS (SELECT 1 FROM device sgd JOIN household sgh ON sgh.id = sgd.household_id"
            " WHERE sgd.gateway_id = {} AND {})"
        ).format(gateway_id, self.household("sgh"))

    def alert(self, alert: str, household: str) -> sql.Composable:
        """For `alert AS alert` joined to its household (through its resident, else its device,
        NULL for a gateway alert): true when the alert is about something in scope."""
        if self.role == ConsoleRole.ADMIN:
            return sql.SQL("TRUE")
        return sql.SQL("({} OR ({} IS NULL AND {} IS NOT NULL AND {}))").format(
            self.household(household),
            sql.Identifier(household, "id"),
            sql.Identifier(alert, "gateway_id"),
            self.gateway(sql.Identifier(alert, "gateway_id")),
        )


# The joins that give an alert `a` its household `h` (for Scope.alert(alert="a", household="h")):
# its resident's, else its device's. The device is looked up only for alerts without a
# resident (COALESCE stops at the first value), so no join over every device is planned.
ALERT_HOUSEHOLD_JOINS = sql.SQL(
    " LEFT JOIN resident ar ON ar.id = a.resident_id"
    " LEFT JOIN household h ON h.id = COALESCE(ar.household_id,"
    " (SELECT ad.household_id FROM device ad WHERE ad.id = a.device_id))"
)
