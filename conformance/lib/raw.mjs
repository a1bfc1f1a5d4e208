// A raw WebSocket client (the `ws` package) that speaks the wire protocol by hand, to check
// frames exactly and to see HTTP-level refusals the official clients hide.

import WebSocket from 'ws';
import { waitFor, withTimeout, DEFAULT_TIMEOUT_MS } from './wait.mjs';

const onTeardown = (scope, fn) => (typeof scope === 'function' ? scope(fn) : scope.after(fn));

/** Builds a WebSocket URL with query parameters (`undefined` values are left out). */
export function socketUrl(server, path, params = {}) {
  const url = new URL(`${server.wsUrl}${path}`);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) url.searchParams.set(k, v);
  return url.toString();
}

/**
 * Attempts a WebSocket upgrade that the server is expected to refuse. Resolves with
 * `{ status, headers, body }` of the HTTP answer; rejects if the upgrade succeeds.
 */
export function refusedUpgrade(url, timeoutMs = DEFAULT_TIMEOUT_MS) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => {
          resolve({ status: res.statusCode, headers: res.headers, body });
          ws.terminate();
        });
      });
      ws.on('open', () => {
        ws.terminate();
        reject(new Error(`the upgrade to ${url} was accepted`));
      });
      ws.on('error', (e) => {
        // `ws` reports an error after 'unexpected-response' handling too; only a connection
        // failure matters here.
        if (!/Unexpected server response/.test(String(e.message))) reject(e);
      });
    }),
    timeoutMs,
    `the server to answer the upgrade to ${url}`,
  );
}

/** Decodes a server binary frame of kind 4 (user broadcast). */
export function decodeUserBroadcast(buf) {
  const kind = buf[0];
  if (kind !== 4) return { kind };
  const [topicLen, eventLen, metaLen, encoding] = [buf[1], buf[2], buf[3], buf[4]];
  let at = 5;
  const take = (n) => {
    const part = buf.subarray(at, at + n);
    at += n;
    return part;
  };
  const topic = take(topicLen).toString('utf8');
  const event = take(eventLen).toString('utf8');
  const meta = take(metaLen).toString('utf8');
  const body = buf.subarray(at);
  return {
    kind,
    topic,
    event,
    meta,
    encoding,
    body,
    payload: encoding === 1 ? JSON.parse(body.toString('utf8')) : body,
  };
}

/** Encodes a client binary frame of kind 3 (user broadcast push), as realtime-js does. */
export function encodeUserBroadcastPush({ joinRef, ref, topic, event, payload, binary = false }) {
  const enc = new TextEncoder();
  const [jr, r, t, e] = [joinRef ?? '', ref ?? '', topic, event].map((s) => enc.encode(s));
  const body = binary ? Buffer.from(payload) : Buffer.from(JSON.stringify(payload ?? {}));
  return Buffer.concat([
    Buffer.from([3, jr.length, r.length, t.length, e.length, 0, binary ? 0 : 1]),
    jr,
    r,
    t,
    e,
    body,
  ]);
}

/**
 * One raw connection with serializer `vsn` ('1.0.0' or '2.0.0'). Every frame received is decoded into `{ join_ref, ref, topic, event,
 * payload }` (text) or `{ binary: true, ...decodeUserBroadcast }`, kept with its raw form.
 */
export class RawClient {
  constructor(ws, vsn) {
    this.ws = ws;
    this.vsn = vsn;
    this.frames = [];
    this.nextRef = 1;
    this.closed = null;
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        const buf = Buffer.from(data);
        this.frames.push({ binary: true, raw: buf, ...decodeUserBroadcast(buf) });
      } else {
        const text = data.toString();
        const parsed = JSON.parse(text);
        const msg = Array.isArray(parsed)
          ? { join_ref: parsed[0], ref: parsed[1], topic: parsed[2], event: parsed[3], payload: parsed[4] }
          : parsed;
        this.frames.push({ binary: false, raw: text, parsed, ...msg });
      }
    });
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  /** Connects; `options.vsn` defaults to '2.0.0', and an explicit `undefined` leaves it out. */
  static async connect(server, scope, options = {}) {
    const { apikey = server.anonKey, path = '/realtime/v1/websocket' } = options;
    const vsn = 'vsn' in options ? options.vsn : '2.0.0';
    const ws = new WebSocket(socketUrl(server, path, { apikey, vsn }));
    const client = new RawClient(ws, vsn ?? '1.0.0');
    onTeardown(scope, () => ws.terminate());
    await withTimeout(
      new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      }),
      DEFAULT_TIMEOUT_MS,
      'the raw socket to open',
    );
    return client;
  }

  get isV2() {
    return this.vsn === '2.0.0';
  }

  /** Sends one text message in this socket's serializer; returns its ref. */
  send(topic, event, payload, { joinRef = null, ref = String(this.nextRef++) } = {}) {
    const frame = this.isV2
      ? JSON.stringify([joinRef, ref, topic, event, payload])
      : JSON.stringify(joinRef === null ? { topic, event, payload, ref } : { topic, event, payload, ref, join_ref: joinRef });
    this.ws.send(frame);
    return ref;
  }

  sendBinary(buf) {
    this.ws.send(buf, { binary: true });
  }

  /** Waits for a received frame that matches `predicate` (searching from `from`). */
  waitFrame(predicate, describe = 'a frame', timeoutMs = DEFAULT_TIMEOUT_MS, from = 0) {
    return waitFor(
      () => this.frames.slice(from).find(predicate),
      timeoutMs,
      describe,
      () => this.dump(),
    );
  }

  /** Waits for the reply to `ref`. */
  reply(ref, timeoutMs = DEFAULT_TIMEOUT_MS) {
    return this.waitFrame((f) => f.event === 'phx_reply' && f.ref === ref, `the reply to ref ${ref}`, timeoutMs);
  }

  /** Joins `topic` with `payload`; resolves with `{ joinRef, reply }`. */
  async join(topic, payload = { config: {} }) {
    const ref = String(this.nextRef++);
    this.send(topic, 'phx_join', payload, { joinRef: ref, ref });
    const reply = await this.reply(ref);
    return { joinRef: ref, reply };
  }

  dump() {
    return '\n' + this.frames.map((f) => (f.binary ? `(binary) ${f.raw.toString('hex')}` : f.raw)).join('\n');
  }
}
