"""The component's exports: glue between the WIT world and engagement.py."""

from typing import List

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

import engagement


class WitWorld(wit_world.WitWorld):
    def on_event(
        self,
        contact: types.Contact,
        event: types.Event,
        activity: List[types.ActivityCount],
    ) -> types.ScoreChange:
        try:
            return engagement.on_event(host.config, event, activity)
        except engagement.BadConfig as e:
            raise Err(types.PluginError(code="bad-config", message=str(e)))

    def on_profile(self, contact: types.Contact) -> types.ScoreChange:
        return types.ScoreChange(delta=0, reasons=[])
