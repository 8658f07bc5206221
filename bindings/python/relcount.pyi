"""relcount: an embedded, in-memory engine that keeps profile relation counters
(count, exact sums, top-N) up to date on every write, as a native module.

Profiles are named by id (a ``str``) or by a dict in the platform's matching modes:
``{"profile_id": ...}``, ``{"email": ..., "resource_id": n}``,
``{"email_profile": ...}``, ``{"phone": ..., "resource_id": n}`` or
``{"field_name": ..., "field_value": str | int}``.

Calls that may wait (writes, ``list``, imports) release the GIL while the engine
works; ``get_counter`` by id, a lock-free lookup, keeps it. A refused call raises a
``RelcountError`` subclass with the engine's message and changes nothing; a value of
the wrong Python type raises ``TypeError``.
"""

from os import PathLike
from typing import Iterable, Literal, Optional, Tuple, TypedDict, Union

__version__: str

Value = Union[int, float, bool]
"""A property's value: ``bool`` for bool properties, ``int`` or ``float`` for numbers."""

Profile = Union[str, dict[str, Union[str, int, None]]]
"""A profile: its id, or a dict naming it by email, phone or a custom field."""

class PropSpec(TypedDict, total=False):
    """One property of a relation type: ``type`` is required."""

    type: Literal["int", "float", "bool"]
    sum: bool
    top: int

class TopItem(TypedDict):
    profile_id: str
    value: Value

class PropCounter(TypedDict):
    total: int
    top: Optional[list[TopItem]]
    sum: Union[int, float, None]

class Counter(TypedDict):
    """``relations/get_counter``'s ``data``, as in the platform's example."""

    profile_id: str
    profile_xxh: str
    total: int
    props: dict[str, PropCounter]

class Valued(TypedDict):
    value: Value

class Row(TypedDict):
    profile_id_a: str
    xxh_a: str
    profile_id_b: str
    xxh_b: str
    db_b: int
    props: dict[str, Valued]

class Page(TypedDict):
    data: list[Row]
    total_count: int

class Subscription(TypedDict, total=False):
    resource_id: int
    channel: Literal["email", "sms"]
    email: str
    phone: str

class Engine:
    """Relation types, profiles and their counters, in memory; durable when made by
    ``Engine.open``. Safe to share between threads."""

    def __init__(self, shards: Optional[int] = None) -> None:
        """An empty in-memory engine; ``shards`` (1 to 65536, default 64) splits the
        writers' locks."""
    @staticmethod
    def open(path: Union[str, PathLike[str]], fsync: Literal["always", "everysec", "no"] = "always") -> Engine:
        """A durable engine on the data directory ``path``, recovered to exactly its
        acknowledged writes. The directory is released when the engine is collected."""
    def define(self, rel_id: int, db_a: int, db_b: int, props: dict[str, PropSpec]) -> None:
        """Defines a relation type from profiles of ``db_b`` to profiles of ``db_a``."""
    def attach(self, rel_id: int, profile_a: Profile, profile_b: Profile, weights: Optional[dict[str, Value]] = None) -> None:
        """Attaches with these values, replacing the relation's values."""
    def strengthen(self, rel_id: int, profile_a: Profile, profile_b: Profile, weights: Optional[dict[str, Value]] = None) -> None:
        """Adds these deltas (a negative one weakens) and sets the given bools."""
    def edit(self, rel_id: int, profile_a: Profile, profile_b: Profile, weights: Optional[dict[str, Value]] = None) -> None:
        """Overwrites the listed values, keeping the others."""
    def detach(self, rel_id: int, profile_a: Profile, profile_b: Profile) -> None:
        """Removes the relation: ``ProfileNotFound`` when either profile does not
        exist, ``RelationNotFound`` when both do and the relation does not."""
    def delete_profile(self, db_id: int, profile: Profile) -> None:
        """Deletes a profile and every relation it takes part in."""
    def import_profile(
        self,
        db_id: int,
        profile_id: str,
        *,
        email: Optional[str] = None,
        phone: Optional[str] = None,
        fields: Optional[dict[str, Union[str, int, list[str]]]] = None,
        subscriptions: Optional[list[Subscription]] = None,
    ) -> None:
        """Creates or replaces a profile's data (never its relations)."""
    def import_relations(self, rel_id: int, rows: Iterable[Tuple[str, str, Optional[dict[str, Value]]]]) -> int:
        """Attaches many relations, all or nothing; returns the number of rows."""
    def apply(
        self,
        writes: Iterable[Union[Tuple[str, int, str, str], Tuple[str, int, str, str, Optional[dict[str, Value]]]]],
    ) -> int:
        """Applies (op, rel_id, profile_a_id, profile_b_id[, weights]) writes in order,
        all or nothing; op is "attach", "strengthen", "edit" or "detach"."""
    def get_counter(self, rel_id: int, profile: Profile) -> Counter:
        """The profile's counters for the relation type."""
    def list(self, rel_id: int, profile: Profile, skip: int = 0, limit: int = 100) -> Page:
        """One page of the profile's relations, ordered by initiator id."""
    def contains_profile(self, db_id: int, profile: Profile) -> bool:
        """Whether the database holds this profile."""
    def compact(self) -> None:
        """Folds the write log into a new snapshot (a durable engine only)."""
    @property
    def profile_count(self) -> int:
        """Live profiles, every database together."""
    @property
    def relation_count(self) -> int:
        """Relations, every type together."""

class RelcountError(Exception):
    """Any error of relcount; a refused call changed nothing. ``row`` is set when a
    row of ``import_relations`` was refused (a ``TypeError`` for a row has it too)."""

    row: Optional[int]

class UnknownRelation(RelcountError): ...
class SchemaConflict(RelcountError): ...
class InvalidSchema(RelcountError): ...
class InvalidProfileId(RelcountError): ...
class ProfileNotFound(RelcountError): ...
class NoMatch(RelcountError): ...
class Ambiguous(RelcountError): ...
class InvalidProfileData(RelcountError): ...
class RelationNotFound(RelcountError): ...
class UnknownProperty(RelcountError): ...
class DuplicateProperty(RelcountError): ...
class WrongType(RelcountError): ...
class NotFinite(RelcountError): ...
class IntOverflow(RelcountError): ...
class FloatOverflow(RelcountError): ...
class InvalidArgument(RelcountError): ...
class LookupTooBroad(RelcountError): ...
class CapacityExceeded(RelcountError): ...

class StorageError(RelcountError):
    """The data directory failed, is corrupted or is in use."""

    kind: Literal["io", "corrupt", "locked", "not_durable", "refused", "internal", "other"]
