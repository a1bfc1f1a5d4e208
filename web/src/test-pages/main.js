// Pages for the browser tests. ?url=...&key=... say where the server is;
// ?mode=double renders two RealtimePresence components on one channel instead of the seed example.
import { mount } from 'svelte';
import Seed from './Seed.svelte';
import Double from './Double.svelte';

const params = new URLSearchParams(location.search);
const props = { url: params.get('url'), key: params.get('key') };
if (params.get('mode') === 'double') {
  mount(Double, {
    target: document.getElementById('app'),
    props: { ...props, channelName: params.get('channel') ?? 'double', name: params.get('name') ?? 'anonymous' },
  });
} else {
  mount(Seed, { target: document.getElementById('app'), props });
}
