"""The canonical silver entities: their fields, Spark types, required fields and identifiers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Entity:
    """One silver table's shape; every source maps some of its columns onto these fields."""

    table: str
    fields: dict[str, str]
    required: tuple[str, ...]
    # canonical field -> identifier type it contributes to the identity graph
    identifiers: dict[str, str] = field(default_factory=dict)
    # which timestamp says when the record happened (first/last seen, recency)
    time_field: str | None = None


ENTITIES: dict[str, Entity] = {
    "customers": Entity(
        table="customers",
        fields={
            "member_id": "string",
            "name": "string",
            "gender": "string",
            "birth_date": "date",
            "phone": "string",
            "email": "string",
            "id_card": "string",
            "province": "string",
            "city": "string",
            "registered_at": "timestamp",
        },
        required=(),
        identifiers={"member_id": "member_id", "phone": "phone", "email": "email", "id_card": "id_card"},
        time_field="registered_at",
    ),
    "orders": Entity(
        table="orders",
        fields={
            "order_time": "timestamp",
            "amount": "decimal(12,2)",
            "phone": "string",
            "buyer_account": "string",
            "platform": "string",
            "store_id": "string",
            "receiver_name": "string",
            "province": "string",
            "city": "string",
            "status": "string",
            "payment_method": "string",
            "member_id": "string",
        },
        required=("order_time", "amount"),
        identifiers={"phone": "phone", "buyer_account": "buyer_account", "member_id": "member_id"},
        time_field="order_time",
    ),
    "events": Entity(
        table="events",
        fields={
            "event_time": "timestamp",
            "event_type": "string",
            "appid": "string",
            "openid": "string",
            "unionid": "string",
            "os": "string",
            "idfa": "string",
            "oaid": "string",
            "android_id": "string",
            "anonymous_id": "string",
            "member_id": "string",
            "phone": "string",
            "page": "string",
        },
        required=("event_time",),
        identifiers={
            "openid": "openid",
            "unionid": "unionid",
            "idfa": "idfa",
            "oaid": "oaid",
            "android_id": "android_id",
            "anonymous_id": "anonymous_id",
            "member_id": "member_id",
            "phone": "phone",
        },
        time_field="event_time",
    ),
    "consent_events": Entity(
        table="consent_events",
        fields={
            "subject_type": "string",
            "subject_value": "string",
            "purpose": "string",
            "action": "string",
            "consent_channel": "string",
            "occurred_at": "timestamp",
            "source_system": "string",
        },
        required=("subject_type", "subject_value", "purpose", "action", "occurred_at"),
        # The subject's identifier type is data (subject_type), resolved in the silver stage.
        identifiers={},
        time_field="occurred_at",
    ),
}
