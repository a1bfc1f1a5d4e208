// The Svelte 5 form (children snippet, callback props), BroadcastChannel in both dialects, the
// status shown at once with `pending`, and the presence view kept from the server's messages.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { flushSync, mount, unmount } from 'svelte';
import RunesForms from './fixtures/RunesForms.svelte';
import LegacyBroadcast from './fixtures/LegacyBroadcast.svelte';
import { fakeClient, settle } from './fake-realtime.js';
import { applyPresenceDiff } from '../../src/lib/presence-view.js';

let mounted = [];
function render(Component, props) {
  const target = document.createElement('div');
  document.body.append(target);
  const instance = mount(Component, { target, props });
  flushSync();
  mounted.push(instance);
  return target;
}
const $ = (target, selector) => target.querySelector(selector).textContent.trim();

afterEach(() => {
  for (const instance of mounted) unmount(instance);
  mounted = [];
  document.body.innerHTML = '';
  vi.useRealTimers();
});

describe('the presence view', () => {
  it('drops a key that updated its status and then left', () => {
    let view = {};
    ({ view } = applyPresenceDiff(view, { joins: { a: { metas: [{ phx_ref: '1', status: 'online' }] } } }));
    ({ view } = applyPresenceDiff(view, { joins: { b: { metas: [{ phx_ref: '2' }] } } }));
    // An update: the new presence joins (with phx_ref_prev), the old one leaves.
    const update = applyPresenceDiff(view, {
      joins: { a: { metas: [{ phx_ref: '3', phx_ref_prev: '1', status: 'offline' }] } },
      leaves: { a: { metas: [{ phx_ref: '1', status: 'online' }] } },
    });
    expect(update.view.a).toEqual([{ presence_ref: '3', status: 'offline' }]);
    expect(update.events.map((e) => [e.event, e.key, e.currentPresences.length])).toEqual([
      ['join', 'a', 1],
      ['leave', 'a', 1],
    ]);
    const left = applyPresenceDiff(update.view, { leaves: { a: { metas: [{ phx_ref: '3' }] } } });
    expect(Object.keys(left.view)).toEqual(['b']);
    expect(left.events).toEqual([{ event: 'leave', key: 'a', currentPresences: [], leftPresences: [{ presence_ref: '3' }] }]);
  });

  it('accepts metas whose phx_ref realtime-js already renamed presence_ref', () => {
    const { view } = applyPresenceDiff({}, { joins: { a: { metas: [{ presence_ref: '1' }] } } });
    const left = applyPresenceDiff(view, { leaves: { a: { metas: [{ presence_ref: '1' }] } } });
    expect(left.view).toEqual({});
  });

  it('applies diffs that arrive before the presence_state of the join after it', () => {
    const client = fakeClient();
    const events = [];
    const target = render(RunesForms, { client, events });
    const [room] = client.realtime.created;
    room.joined();
    room.join('late', [{ phx_ref: 'r2' }]);
    expect($(target, '#count')).toBe('loading');
    room.sync({ early: { metas: [{ phx_ref: 'r1' }] } });
    flushSync();
    expect($(target, '#count')).toBe('2');
    expect(events).toEqual(['join early', 'join late']);
  });
});

describe('RealtimePresence in a runes parent', () => {
  it('hands the snippet its values and calls onjoin / onleave', () => {
    const client = fakeClient();
    const events = [];
    const target = render(RunesForms, { client, events });
    const [room] = client.realtime.created;
    room.joined();
    room.sync({ a: { metas: [{ phx_ref: 'r1' }] } });
    room.join('b', [{ phx_ref: 'r2' }]);
    flushSync();
    expect($(target, '#count')).toBe('2');
    room.leave('b', [{ phx_ref: 'r2' }]);
    flushSync();
    expect($(target, '#count')).toBe('1');
    expect(events).toEqual(['join a', 'join b', 'leave b']);
  });

  it('shows the chosen status at once, and pending while it waits for the rate limit', async () => {
    vi.useFakeTimers();
    const client = fakeClient();
    const target = render(RunesForms, { client, events: [] });
    const [room] = client.realtime.created;
    room.joined();
    room.sync({});
    flushSync();
    // The join's track is call 1 of 5; four changes go out at once, the fifth waits.
    for (let i = 0; i < 4; i += 1) {
      target.querySelector(i % 2 === 0 ? '#offline' : '#online').click();
      flushSync();
      expect($(target, '#me')).toBe(i % 2 === 0 ? 'offline' : 'online');
    }
    expect(room.tracks).toHaveLength(5);
    target.querySelector('#offline').click();
    flushSync();
    expect($(target, '#me')).toBe('offline (waiting)');
    expect(room.tracks).toHaveLength(5);
    await vi.advanceTimersByTimeAsync(32_000);
    flushSync();
    expect(room.tracks).toHaveLength(6);
    expect(room.tracks.at(-1).payload).toEqual({ status: 'offline' });
    expect($(target, '#me')).toBe('offline');
  });
});

describe('BroadcastChannel', () => {
  it('in a runes parent: the last payload, send once joined, onmessage; it tracks no presence', async () => {
    const client = fakeClient();
    const events = [];
    const target = render(RunesForms, { client, events });
    const chat = client.realtime.created.find((c) => c.subTopic === 'chat');
    expect($(target, '#payload')).toBe('loading');
    chat.joined();
    flushSync();
    expect($(target, '#payload')).toBe('none');
    expect(chat.tracks).toEqual([]);
    chat.broadcast('note', { text: 'one' });
    chat.broadcast('other', { text: 'not this event' });
    flushSync();
    expect($(target, '#payload')).toBe('one');
    expect(events).toEqual(['message one']);
    target.querySelector('#send').click();
    await settle();
    expect(chat.sent).toEqual([{ type: 'broadcast', event: 'note', payload: { text: 'hi' } }]);
  });

  it('in a legacy parent: slot props and on:message', async () => {
    const client = fakeClient();
    const received = [];
    const target = render(LegacyBroadcast, { client, onMessage: (p) => received.push(p) });
    const [chat] = client.realtime.created;
    chat.joined();
    chat.broadcast('note', { text: 'two' });
    flushSync();
    expect(target.querySelector('#legacy').textContent).toContain('two');
    expect(received).toEqual([{ text: 'two' }]);
    target.querySelector('#legacy button').click();
    await settle();
    expect(chat.sent.map((m) => m.payload)).toEqual([{ text: 'from legacy' }]);
  });

  it('sends nothing before the channel is joined', async () => {
    const client = fakeClient();
    const target = render(LegacyBroadcast, { client, onMessage: () => {} });
    const [chat] = client.realtime.created;
    // Not joined yet: nothing is sent.
    target.querySelector('#legacy button').click();
    await settle();
    expect(chat.sent).toEqual([]);
  });
});
