// Where the demo finds its server and key. Served by `headcount serve`, the page talks to the
// server it came from (location.origin) with the anon key the server wrote into the page. For
// development (`npm run dev`), ?url=...&key=... point it at any server.

const NAMES = [
  'Ada', 'Alan', 'Barbara', 'Dennis', 'Edsger', 'Frances', 'Grace', 'Hedy',
  'Joan', 'Ken', 'Linus', 'Margaret', 'Radia', 'Sophie', 'Tim', 'Yukihiro',
];

/**
 * @param {Location} location
 * @param {Document} document
 */
export function readConfig(location, document) {
  const params = new URLSearchParams(location.search);
  let injected = {};
  try {
    injected = JSON.parse(document.getElementById('headcount-config')?.textContent || '{}');
  } catch {
    injected = {};
  }
  return {
    url: params.get('url') || injected.url || location.origin,
    key: params.get('key') || injected.anonKey || '',
    channelName: params.get('channel') || 'any',
    me: {
      id: Math.random().toString(36).slice(2, 10),
      name: params.get('name') || NAMES[Math.floor(Math.random() * NAMES.length)],
    },
  };
}
