"""The scoring logic, natively with pytest (no component needed)."""

import pytest
from wit_world.imports import types

import engagement


def event(kind, **props):
    fields = [types.Field(key=k, value=types.Value_Text(v)) for k, v in props.items()]
    return types.Event(id="e", contact_id="c", kind=kind, at=0, properties=fields)


def score(config, ev, today=0):
    activity = [types.ActivityCount(ev.kind, today, today, today, 0)]
    return engagement.on_event(config.get, ev, activity)


def test_default_points_per_kind():
    assert score({}, event("email.clicked")).delta == 3
    assert score({}, event("webinar.attended")).delta == 10
    assert score({}, event("email.unsubscribed")).delta == -10
    assert score({}, event("something.else")) == types.ScoreChange(0, [])


def test_pricing_page_is_a_micro_conversion():
    change = score({}, event("page.visited", url="https://acme.example/Pricing?plan=pro"))
    assert change.delta == 10
    assert change.reasons == ["pricing page visit (micro conversion) +10"]
    assert score({}, event("page.visited", path="/blog/follow-up")).delta == 1


def test_caps_stop_praise_but_not_penalties():
    config = {"max_per_day": "2"}
    assert score(config, event("email.opened"), today=1).delta == 1
    assert score(config, event("email.opened"), today=2).delta == 0
    assert score(config, event("email.bounced"), today=9).delta == -5


def test_configured_points_override_defaults():
    config = {"points": "email.opened:0, demo.booked:30", "pricing_points": "25"}
    assert score(config, event("email.opened")).delta == 0
    assert score(config, event("demo.booked")).delta == 30
    assert score(config, event("email.clicked")).delta == 3
    assert score(config, event("page.visited", url="/pricing")).delta == 25


def test_malformed_config_is_reported():
    with pytest.raises(engagement.BadConfig, match="configuration `points`"):
        score({"points": "email.opened=3"}, event("email.opened"))
    with pytest.raises(engagement.BadConfig, match="max_per_day"):
        score({"max_per_day": "many"}, event("x"))
