// Types of the package's public API (index.js). Written by hand: the components are wrapped in
// index.js so that they take both Svelte dialects, and these declarations describe both: props
// with callback props and a `children` snippet (Svelte 5), slot props and events (legacy syntax).

import type { SvelteComponent, Snippet } from 'svelte';
import type { Readable } from 'svelte/store';
import type {
  RealtimeChannel,
  RealtimeChannelOptions,
  RealtimeClient,
  SupabaseClient,
  SupabaseClientOptions,
} from '@supabase/supabase-js';

/** One presence of a key: what its client tracked, and the server's reference of it. */
export type Presence<T extends Record<string, any> = Record<string, any>> = T & { presence_ref: string };

/**
 * A channel's presence state: one entry per presence key, each the presences of that key, and the
 * number of users present (distinct keys) in `count`, which is not enumerable (Object.keys,
 * {#each Object.entries(state)} and JSON see only presence keys).
 */
export type RealtimePresenceState<T extends Record<string, any> = Record<string, any>> = {
  [key: string]: Presence<T>[];
} & { readonly count: number };

/** A channel as the components hand it out: realtime-js's channel, with its `name`. */
export type NamedChannel = RealtimeChannel & { readonly name: string };

/** A key joined, or a present key tracked a new status (then `currentPresences` is not empty). */
export interface PresenceJoinEvent<T extends Record<string, any> = Record<string, any>> {
  key: string;
  newPresences: Presence<T>[];
  currentPresences: Presence<T>[];
}

/** Presences of a key left (all of them when `currentPresences` is empty). */
export interface PresenceLeaveEvent<T extends Record<string, any> = Record<string, any>> {
  key: string;
  leftPresences: Presence<T>[];
  currentPresences: Presence<T>[];
}

/** What <SupabaseApp> hands its content. `client` is null during server rendering. */
export interface SupabaseAppValues {
  client: SupabaseClient<any, any, any> | null;
}

export interface SupabaseAppProps {
  /** The project URL, e.g. http://127.0.0.1:4000 */
  url?: string;
  /** The anon (publishable) key */
  key?: string;
  options?: SupabaseClientOptions<any>;
  /** A client to use as is, instead of url and key */
  client?: SupabaseClient<any, any, any>;
  children?: Snippet<[SupabaseAppValues]>;
}

/** Provides a Supabase client (from `client`, or `url` + `key`) to the components inside it. */
export class SupabaseApp extends SvelteComponent<
  SupabaseAppProps,
  Record<string, never>,
  { default: SupabaseAppValues }
> {}

/** What <RealtimePresence> hands its content (slot props, or the `children` snippet's argument). */
export interface RealtimePresenceValues<T extends Record<string, any> = Record<string, any>> {
  /** null until the channel's first presence sync (after each join) */
  state: RealtimePresenceState<T> | null;
  /** null during server rendering */
  realtime: RealtimeClient | null;
  /** set while the channel is down, null again once it has recovered */
  error: Error | null;
  /** null until the channel is opened (in the browser, after mount) */
  channel: NamedChannel | null;
  /** Merges `status` into the tracked status and tracks it (at once, or when the rate limit allows) */
  updateStatus: (status: Partial<T> & Record<string, any>) => void;
  /** The status this client tracks, as chosen: updated at once by updateStatus */
  status: Partial<T> & Record<string, any>;
  /** true while the latest status waits for the presence rate limit (5 calls per 30 s) */
  pending: boolean;
}

export interface RealtimePresenceProps<T extends Record<string, any> = Record<string, any>> {
  /** The channel ('any' when not given); changing it moves to the new channel */
  channelName?: string;
  /** The status this client tracks at first ({} when not given) */
  userStatus?: T;
  channelOptions?: RealtimeChannelOptions;
  onjoin?: (event: PresenceJoinEvent<T>) => void;
  onleave?: (event: PresenceLeaveEvent<T>) => void;
  children?: Snippet<[RealtimePresenceValues<T>]>;
}

/** Tracks this client on a channel and hands the channel's presence state to its content. */
export class RealtimePresence<T extends Record<string, any> = Record<string, any>> extends SvelteComponent<
  RealtimePresenceProps<T>,
  { join: CustomEvent<PresenceJoinEvent<T>>; leave: CustomEvent<PresenceLeaveEvent<T>> },
  { default: RealtimePresenceValues<T> }
> {}

/** realtime-js's answer to a send. */
export type SendResult = 'ok' | 'error' | 'timed out' | (string & {});

/** What <BroadcastChannel> hands its content. */
export interface BroadcastChannelValues<P = any> {
  /** The last payload received for the event, null before the first */
  payload: P | null;
  channel: NamedChannel | null;
  /** Broadcasts `payload` under the event; never rejects (a failure also sets `error`) */
  send: (payload: P) => Promise<SendResult>;
  error: Error | null;
}

export interface BroadcastChannelProps<P = any> {
  channelName?: string;
  /** The broadcast event to receive and send ('message' when not given; '*' receives every event) */
  eventName?: string;
  channelOptions?: RealtimeChannelOptions;
  /** Called with each payload received */
  onmessage?: (payload: P) => void;
  children?: Snippet<[BroadcastChannelValues<P>]>;
}

/** Receives and sends broadcasts of one event on a channel. */
export class BroadcastChannel<P = any> extends SvelteComponent<
  BroadcastChannelProps<P>,
  { message: CustomEvent<P> },
  { default: BroadcastChannelValues<P> }
> {}

export interface PresenceSnapshot<T extends Record<string, any> = Record<string, any>> {
  data: RealtimePresenceState<T> | null;
  error: Error | null;
  channel: NamedChannel | null;
}

export interface StatusSnapshot<T extends Record<string, any> = Record<string, any>> {
  data: Partial<T> & Record<string, any>;
  error: Error | null;
  pending: boolean;
}

export interface PresenceStore<T extends Record<string, any> = Record<string, any>>
  extends Readable<PresenceSnapshot<T>> {
  readonly channel: NamedChannel | null;
  updateStatus: (status: Partial<T> & Record<string, any>) => void;
  on(event: 'join', handler: (event: PresenceJoinEvent<T>) => void): () => void;
  on(event: 'leave', handler: (event: PresenceLeaveEvent<T>) => void): () => void;
  statusStore(): Readable<StatusSnapshot<T>>;
}

export interface UserStatusStore<T extends Record<string, any> = Record<string, any>>
  extends Readable<StatusSnapshot<T>> {
  updateStatus: (status: Partial<T> & Record<string, any>) => void;
}

export interface BroadcastSnapshot<P = any> {
  payload: P | null;
  error: Error | null;
  channel: NamedChannel | null;
}

export interface BroadcastStore<P = any> extends Readable<BroadcastSnapshot<P>> {
  readonly channel: NamedChannel | null;
  send: (payload: P) => Promise<SendResult>;
}

export function presenceStateStore<T extends Record<string, any> = Record<string, any>>(
  realtime: RealtimeClient | null | undefined,
  channelName?: string,
  channelOptions?: RealtimeChannelOptions,
  userStatus?: T,
): PresenceStore<T>;

export function userStatusStore<T extends Record<string, any> = Record<string, any>>(
  target: PresenceStore<T> | RealtimeChannel,
  userStatus?: Partial<T> & Record<string, any>,
): UserStatusStore<T>;

export function broadcastStore<P = any>(
  realtime: RealtimeClient | null | undefined,
  channelName?: string,
  eventName?: string,
  channelOptions?: RealtimeChannelOptions,
): BroadcastStore<P>;

export interface SupabaseContext {
  client: SupabaseClient<any, any, any> | null;
  realtime: RealtimeClient | null;
  readonly auth: SupabaseClient['auth'] | undefined;
  readonly storage: SupabaseClient['storage'] | undefined;
  readonly functions: SupabaseClient['functions'] | undefined;
}

export function getSupabaseContext(component?: string): SupabaseContext;
export function setSupabaseContext(client: SupabaseClient<any, any, any> | null): SupabaseContext;

/** The number of users present (distinct presence keys), whatever the keys are called. */
export function presenceCount(state: Record<string, any[]> | null | undefined): number;

/** The server's presence limit: calls per window. */
export const PRESENCE_MAX_CALLS: number;
/** The server's presence window, in milliseconds. */
export const PRESENCE_WINDOW_MS: number;
