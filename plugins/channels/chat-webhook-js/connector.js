// The component's exports for the `channel` world. Outgoing HTTP goes
// through fetch(), which the host checks against the binding's allow-list.
import { config, log } from 'nachfass:plugin/host@0.1.0';
import { chatPayload, outcome } from './payload.js';

export function describe() {
  return { kind: 'webhook', provider: 'Chat incoming webhook' };
}

export async function deliver(message) {
  const url = config('url');
  if (!url) throw { tag: 'permanent', val: 'configuration `url` is required but not set' };
  const body = JSON.stringify(chatPayload(config('format'), message));
  let response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': message.idempotencyKey },
      body,
    });
  } catch (e) {
    throw { tag: 'transient', val: `cannot reach the webhook: ${e}` };
  }
  const result = outcome(response.status, response.headers.get('retry-after'));
  if (result.error) throw result.error;
  log('info', `delivered ${message.idempotencyKey}`);
  return { providerId: undefined };
}

export function parseCallback(_request) {
  return [];
}
