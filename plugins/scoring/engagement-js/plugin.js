// Exports of the scorer world: glue between the WIT and engagement.js.
import { config } from 'nachfass:plugin/host@0.1.0';
import { scoreEvent } from './engagement.js';

export function onEvent(_contact, event, activity) {
  return scoreEvent(config, event, activity);
}

export function onProfile(_contact) {
  return { delta: 0n, reasons: [] };
}
