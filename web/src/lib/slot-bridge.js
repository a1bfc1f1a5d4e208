// Lets the components, written in Svelte 5 runes syntax, take their content and events in both
// dialects, however the parent was compiled.
//
// A component renders its content with `{@render children?.(values)}`. What arrives as `children`
// depends on the parent:
//
// - a Svelte 5 snippet, `{#snippet children({ state })}`: called on the client with a getter
//   (`() => values`), on the server with the values;
// - legacy slot content, `<div slot="default" let:state>` (the seed page's form) or
//   `<Component let:state>`: compiled as a function that reads the values as properties of its
//   argument (`$$slotProps.state`). On the client it comes as `children`; on the server as
//   `$$slots.default`, with `children` a placeholder that throws.
//
// The bridge hands the content an argument that works both ways: a function returning the values
// that also carries each of them as a getter. It also turns legacy event directives (`on:join`,
// which the parent passes in `$$events`) into calls of the matching callback prop (`onjoin`), so a
// component only has callback props: the callback gets the event's detail, a directive handler a
// CustomEvent with that detail.

/**
 * @param {any} arg what the component handed its content: a getter (client) or the values (server)
 * @param {readonly string[]} keys the names of the values
 */
function bothWays(arg, keys) {
  const values = typeof arg === 'function' ? arg : () => arg;
  const callable = () => values();
  for (const key of keys) {
    Object.defineProperty(callable, key, { get: () => values()?.[key], enumerable: true });
  }
  return callable;
}

/**
 * @param {string} type
 * @param {any} detail
 */
function customEvent(type, detail) {
  if (typeof CustomEvent === 'function') return new CustomEvent(type, { detail });
  return { type, detail };
}

/**
 * Wraps a runes component whose content receives `keys` and whose callback props `on<event>`
 * may also be given as `on:<event>` directives.
 * @template {Function} C
 * @param {C} Component
 * @param {{ keys: readonly string[], events?: readonly string[] }} spec
 * @returns {C}
 */
export function withSlotBridge(Component, { keys, events = [] }) {
  /** @type {any} */
  const Bridged = function (/** @type {any} */ anchor, /** @type {any} */ props) {
    const slots = props?.$$slots;
    const content = typeof slots?.default === 'function' ? slots.default : props?.children;
    /** @type {Record<string | symbol, any>} */
    const replaced = {};
    if (typeof content === 'function') {
      replaced.children = (/** @type {any} */ target, /** @type {any} */ arg) =>
        content(target, bothWays(arg, keys));
    }
    const directives = props?.$$events;
    for (const event of events) {
      const name = `on${event}`;
      const handlers = directives?.[event];
      if (!handlers) continue;
      replaced[name] = (/** @type {any} */ detail) => {
        props[name]?.(detail);
        const list = Array.isArray(handlers) ? handlers : [handlers];
        const e = customEvent(event, detail);
        for (const handler of list) handler?.(e);
      };
    }
    if (Object.keys(replaced).length === 0) return Component(anchor, props);
    const bridgedProps = new Proxy(props, {
      get: (p, key) => (Object.hasOwn(replaced, key) ? replaced[key] : Reflect.get(p, key)),
      has: (p, key) => Object.hasOwn(replaced, key) || Reflect.has(p, key),
    });
    return Component(anchor, bridgedProps);
  };
  Object.defineProperty(Bridged, 'name', { value: Component.name });
  return Bridged;
}
