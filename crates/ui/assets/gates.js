// Retry gates in the views: a gate's scope as text, the listing's filters (or a group) as a
// scope, and the "Hold retries" action that asks for the reason.

import { t } from './i18n.js';

/** The listing filters that make a gate's scope, as the API's Scope fields. */
const SCOPE_OF_FILTER = {
  taskType: 'TaskType', category: 'ErrorCategory', errorCode: 'ErrorCode', clientId: 'ClientId', signature: 'Signature',
};

/** The Scope of the listing's `filters`, or null when none of them makes a scope. */
export function scopeOfFilters(filters) {
  const scope = {};
  for (const [filter, field] of Object.entries(SCOPE_OF_FILTER)) if (filters[filter]) scope[field] = filters[filter];
  return Object.keys(scope).length ? scope : null;
}

/** `TaskType=embedding, ErrorCategory=service_timeout`, or "every retry". */
export function scopeText(scope) {
  const parts = Object.entries(scope || {}).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${k}=${v}`);
  return parts.length ? parts.join(', ') : t('gates.everything');
}

/** Ask for the reason, then hold the retries of `scope`; notifies the outcome. */
export async function holdRetries(ctx, scope) {
  const text = scopeText(scope);
  const reason = await ctx.askReason(t('hold.title', { scope: text }));
  if (!reason) return;
  try {
    const r = await ctx.api.hold(scope, reason);
    ctx.notify(t('done.held', { scope: text, id: r.GateId }), 'ok');
  } catch (e) {
    ctx.notify(t('error.action', { message: e.message }), 'error');
  }
  ctx.reload();
}
