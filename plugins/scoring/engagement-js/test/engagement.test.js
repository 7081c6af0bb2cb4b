import { test } from 'node:test';
import assert from 'node:assert/strict';
import { scoreEvent } from '../engagement.js';

const config = (values) => (key) => values[key];
const event = (kind, props = {}) => ({
  kind,
  properties: Object.entries(props).map(([key, val]) => ({ key, value: { tag: 'text', val } })),
});
const score = (values, ev, today = 0) =>
  scoreEvent(config(values), ev, [{ kind: ev.kind, last24Hours: today }]);

test('default points per kind', () => {
  assert.equal(score({}, event('email.clicked')).delta, 3n);
  assert.equal(score({}, event('webinar.attended')).delta, 10n);
  assert.equal(score({}, event('email.unsubscribed')).delta, -10n);
  assert.deepEqual(score({}, event('something.else')), { delta: 0n, reasons: [] });
});

test('the pricing page is a micro conversion', () => {
  const change = score({}, event('page.visited', { url: 'https://acme.example/Pricing?plan=pro' }));
  assert.deepEqual(change, { delta: 10n, reasons: ['pricing page visit (micro conversion) +10'] });
  assert.equal(score({}, event('page.visited', { path: '/blog/follow-up' })).delta, 1n);
});

test('caps stop praise but not penalties', () => {
  const values = { max_per_day: '2' };
  assert.equal(score(values, event('email.opened'), 1).delta, 1n);
  assert.equal(score(values, event('email.opened'), 2).delta, 0n);
  assert.equal(score(values, event('email.bounced'), 9).delta, -5n);
});

test('configured points override the defaults', () => {
  const values = { points: 'email.opened:0, demo.booked:30', pricing_points: '25' };
  assert.equal(score(values, event('email.opened')).delta, 0n);
  assert.equal(score(values, event('demo.booked')).delta, 30n);
  assert.equal(score(values, event('email.clicked')).delta, 3n);
  assert.equal(score(values, event('page.visited', { url: '/pricing' })).delta, 25n);
});

test('malformed configuration is a bad-config error', () => {
  assert.throws(() => score({ points: 'email.opened=3' }, event('email.opened')), (e) => e.code === 'bad-config');
  assert.throws(() => score({ max_per_day: 'many' }, event('x')), (e) => e.code === 'bad-config');
});
