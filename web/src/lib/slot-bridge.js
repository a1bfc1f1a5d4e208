// Makes a component's default slot props reach `let:` directives however the parent was
// compiled.
//
// Svelte 5's client compiler mishandles `let:` directives on an element that fills the default
// slot, which is exactly the form of the seed page's example:
//
//   <RealtimePresence channelName="my-channel">
//     <div slot="default" let:state let:error ...>
//
// It passes that content as `children` with `$$slots.default: true`, the convention for a
// snippet, so the component's <slot> calls it with a getter function (`() => props`), while the
// compiled content reads the props as properties of its argument: every `let:` value is
// undefined. (`<Component let:state>` and `<svelte:fragment slot="default" let:state>` are
// compiled correctly; the server compiler is not affected.)
//
// The bridge hands the default slot content an argument that works both ways: a function that
// returns the slot props, carrying the same props as getters.

/**
 * @param {Record<string, any>} slotProps
 * @returns {(() => Record<string, any>) & Record<string, any>}
 */
function callableProps(slotProps) {
  if (typeof slotProps === 'function') return slotProps;
  const props = () => slotProps;
  Object.defineProperties(props, Object.getOwnPropertyDescriptors(slotProps ?? {}));
  return props;
}

/**
 * Wraps a component whose default slot has props (`<slot state={...} />`).
 * @template {Function} C
 * @param {C} Component
 * @returns {C}
 */
export function withSlotBridge(Component) {
  /** @type {any} */
  const Bridged = function (anchor, props) {
    const slots = props?.$$slots;
    const content = slots?.default === true ? props.children : slots?.default;
    if (typeof content !== 'function') return Component(anchor, props);
    const bridgedSlots = {
      ...slots,
      default: (target, slotProps) => content(target, callableProps(slotProps)),
    };
    const bridgedProps = new Proxy(props, {
      get: (p, key) => (key === '$$slots' ? bridgedSlots : Reflect.get(p, key)),
    });
    return Component(anchor, bridgedProps);
  };
  Object.defineProperty(Bridged, 'name', { value: Component.name });
  return Bridged;
}
