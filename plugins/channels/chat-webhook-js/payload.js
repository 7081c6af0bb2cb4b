// Pure logic, tested with `node --test` outside the sandbox.

/** The JSON body a chat incoming webhook expects for `message`. */
export function chatPayload(format, message) {
  const text = message.subject ? `*${message.subject}*\n${message.text}` : message.text;
  switch (format ?? 'slack') {
    case 'slack':
      return { text };
    case 'teams':
      return {
        '@type': 'MessageCard',
        '@context': 'https://schema.org/extensions',
        summary: message.subject ?? message.text.slice(0, 80),
        title: message.subject ?? undefined,
        text: message.text,
      };
    default:
      throw { tag: 'permanent', val: `configuration \`format\` \`${format}\` is not slack or teams` };
  }
}

/** What a webhook's HTTP status means for the host: done, retry or give up. */
export function outcome(status, retryAfter) {
  if (status >= 200 && status < 300) return { ok: true };
  if (status === 429) {
    const seconds = Number.parseInt(retryAfter ?? '', 10);
    return { error: { tag: 'rate-limited', val: Number.isFinite(seconds) ? seconds : 60 } };
  }
  if (status >= 500) return { error: { tag: 'transient', val: `webhook answered ${status}` } };
  return { error: { tag: 'permanent', val: `webhook answered ${status}` } };
}
