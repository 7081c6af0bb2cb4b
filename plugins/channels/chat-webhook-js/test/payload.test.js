import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chatPayload, outcome } from '../payload.js';

const message = { subject: 'Hallo', text: 'Ihr Warenkorb wartet.', idempotencyKey: 'k1' };

test('slack gets text with the subject in bold', () => {
  assert.deepEqual(chatPayload(undefined, message), { text: '*Hallo*\nIhr Warenkorb wartet.' });
  assert.deepEqual(chatPayload('slack', { ...message, subject: undefined }), { text: 'Ihr Warenkorb wartet.' });
});

test('teams gets a MessageCard', () => {
  const card = chatPayload('teams', message);
  assert.equal(card['@type'], 'MessageCard');
  assert.equal(card.title, 'Hallo');
  assert.equal(card.text, 'Ihr Warenkorb wartet.');
});

test('an unknown format is a permanent error', () => {
  assert.throws(() => chatPayload('irc', message), (e) => e.tag === 'permanent' && e.val.includes('irc'));
});

test('statuses map to done, retry, rate limit and refusal', () => {
  assert.deepEqual(outcome(200), { ok: true });
  assert.deepEqual(outcome(429, '7'), { error: { tag: 'rate-limited', val: 7 } });
  assert.equal(outcome(503).error.tag, 'transient');
  assert.equal(outcome(404).error.tag, 'permanent');
});
