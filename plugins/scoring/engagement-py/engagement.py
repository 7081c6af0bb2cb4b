"""Implicit scoring: points per touchpoint kind, a pricing-page visit as a
micro conversion, and a cap so that one kind scores at most `max_per_day`
times in 24 hours. The same rules as the Rust plugin scoring/engagement.

Pure logic: the configuration comes in as a function, so the tests run
with plain Python (pytest) and the component passes `host.config`.
"""

from typing import Callable, List, Optional

from wit_world.imports import types

Config = Callable[[str], Optional[str]]

DEFAULT_POINTS = {
    "email.opened": 1,
    "email.clicked": 3,
    "page.visited": 1,
    "download": 5,
    "form.submitted": 5,
    "webinar.registered": 5,
    "webinar.attended": 10,
    "demo.requested": 20,
    "email.unsubscribed": -10,
    "email.bounced": -5,
}


class BadConfig(Exception):
    """A configuration value the plugin cannot use; becomes `bad-config`."""

    def __init__(self, key: str, why: str):
        super().__init__(f"configuration `{key}` {why}")


def config_int(config: Config, key: str, default: int) -> int:
    raw = config(key)
    if raw is None:
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise BadConfig(key, f"`{raw}` does not parse: not a whole number")


def points_for(config: Config, kind: str) -> int:
    table = config("points")
    if table is not None:
        for entry in (e.strip() for e in table.split(",")):
            if not entry:
                continue
            name, sep, points = entry.rpartition(":")
            if not sep:
                raise BadConfig("points", f"entry `{entry}` is not `kind:points`")
            if name.strip() == kind:
                try:
                    return int(points.strip())
                except ValueError:
                    raise BadConfig("points", f"points in `{entry}` are not a whole number")
    return DEFAULT_POINTS.get(kind, 0)


def prop_text(event: types.Event, key: str) -> Optional[str]:
    for field in event.properties:
        if field.key == key and isinstance(field.value, types.Value_Text):
            return field.value.value
    return None


def is_pricing_visit(config: Config, event: types.Event) -> bool:
    marker = (config("pricing_path") or "/pricing").lower()
    if event.kind != "page.visited":
        return False
    urls = (prop_text(event, key) for key in ("url", "path"))
    return any(url is not None and marker in url.lower() for url in urls)


def on_event(
    config: Config, event: types.Event, activity: List[types.ActivityCount]
) -> types.ScoreChange:
    max_per_day = config_int(config, "max_per_day", 5)
    change = types.ScoreChange(delta=0, reasons=[])
    if is_pricing_visit(config, event):
        points = config_int(config, "pricing_points", 10)
        reason = "pricing page visit (micro conversion)"
    else:
        points = points_for(config, event.kind)
        reason = event.kind
    today = next((a.last_24_hours for a in activity if a.kind == event.kind), 0)
    # Caps limit praise, never penalties: every bounce counts.
    if points > 0 and today >= max_per_day:
        return change
    if points != 0:
        change.delta += points
        change.reasons.append(f"{reason} {points:+d}")
    return change
