// The Supabase client that <SupabaseApp> provides to the components inside it.

import { getContext, setContext } from 'svelte';

// Symbol.for, so that two bundled copies of this library still find each other's context.
const KEY = Symbol.for('headcount.supabase-context');

/**
 * @typedef {{ client: any, realtime: any, readonly auth: any, readonly storage: any,
 *   readonly functions: any }} SupabaseContext
 */

/**
 * Provides `client` to the components below the calling one. During server rendering
 * SupabaseApp provides `null` (no client, no socket): the components render their loading state.
 * @param {any} client a SupabaseClient, or null
 * @returns {SupabaseContext}
 */
export function setSupabaseContext(client) {
  /** @type {SupabaseContext} */
  const context = {
    client,
    realtime: client?.realtime ?? null,
    get auth() {
      return client?.auth;
    },
    get storage() {
      return client?.storage;
    },
    get functions() {
      return client?.functions;
    },
  };
  setContext(KEY, context);
  return context;
}

/**
 * The context of the nearest <SupabaseApp>; throws a clear error when there is none.
 * @param {string} [component] the name of the component asking, for the error message
 * @returns {SupabaseContext}
 */
export function getSupabaseContext(component = 'RealtimePresence') {
  const context = /** @type {SupabaseContext | undefined} */ (getContext(KEY));
  if (!context) {
    throw new Error(
      `<${component}> must be used inside <SupabaseApp>: no Supabase client was found. ` +
        'Wrap it in <SupabaseApp url="..." key="..."> or <SupabaseApp client={supabase}>.',
    );
  }
  return context;
}
