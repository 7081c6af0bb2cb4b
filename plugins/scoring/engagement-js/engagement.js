// Implicit scoring: points per touchpoint kind, a pricing-page visit as a
// micro conversion, and a cap so that one kind scores at most
// `max_per_day` times in 24 hours. The same rules as the Rust plugin
// scoring/engagement. Pure logic: `config` is host.config in the sandbox.

const DEFAULT_POINTS = {
  'email.opened': 1,
  'email.clicked': 3,
  'page.visited': 1,
  download: 5,
  'form.submitted': 5,
  'webinar.registered': 5,
  'webinar.attended': 10,
  'demo.requested': 20,
  'email.unsubscribed': -10,
  'email.bounced': -5,
};

const badConfig = (key, why) => ({ code: 'bad-config', message: `configuration \`${key}\` ${why}` });

function wholeNumber(text) {
  return /^[+-]?\d+$/.test(text) ? Number.parseInt(text, 10) : undefined;
}

function configInt(config, key, fallback) {
  const raw = config(key);
  if (raw === undefined || raw === null) return fallback;
  const value = wholeNumber(raw.trim());
  if (value === undefined) throw badConfig(key, `\`${raw}\` does not parse: not a whole number`);
  return value;
}

function pointsFor(config, kind) {
  const table = config('points');
  if (table) {
    for (const entry of table.split(',').map((e) => e.trim()).filter((e) => e)) {
      const at = entry.lastIndexOf(':');
      if (at < 0) throw badConfig('points', `entry \`${entry}\` is not \`kind:points\``);
      if (entry.slice(0, at).trim() === kind) {
        const points = wholeNumber(entry.slice(at + 1).trim());
        if (points === undefined) throw badConfig('points', `points in \`${entry}\` are not a whole number`);
        return points;
      }
    }
  }
  return DEFAULT_POINTS[kind] ?? 0;
}

function propText(event, key) {
  const field = event.properties.find((f) => f.key === key);
  return field && field.value.tag === 'text' ? field.value.val : undefined;
}

function isPricingVisit(config, event) {
  const marker = (config('pricing_path') ?? '/pricing').toLowerCase();
  return (
    event.kind === 'page.visited' &&
    ['url', 'path'].some((key) => propText(event, key)?.toLowerCase().includes(marker))
  );
}

/** The score change for `event`, given the contact's `activity` summary. */
export function scoreEvent(config, event, activity) {
  const maxPerDay = configInt(config, 'max_per_day', 5);
  let points, reason;
  if (isPricingVisit(config, event)) {
    points = configInt(config, 'pricing_points', 10);
    reason = 'pricing page visit (micro conversion)';
  } else {
    points = pointsFor(config, event.kind);
    reason = event.kind;
  }
  const today = activity.find((a) => a.kind === event.kind)?.last24Hours ?? 0;
  // Caps limit praise, never penalties: every bounce counts.
  if ((points > 0 && today >= maxPerDay) || points === 0) return { delta: 0n, reasons: [] };
  return { delta: BigInt(points), reasons: [`${reason} ${points > 0 ? '+' : ''}${points}`] };
}
