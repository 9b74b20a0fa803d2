//! A tiny DOM builder: the console is small enough that elements built by hand
//! and replaced wholesale on change stay simple and fast. Text is always set as
//! text (never parsed as HTML), so values from the API cannot inject markup.

export type Child = Node | string | number | null | undefined | false;
type AttrValue = string | number | boolean | null | undefined | ((event: any) => void);
export type Attrs = Record<string, AttrValue>;

function apply(element: Element, attrs: Attrs, children: (Child | Child[])[]): void {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    // Data attributes carry values for tests and styles: a boolean is written out.
    if (name.startsWith("data-")) {
      element.setAttribute(name, String(value));
      continue;
    }
    if (value === false) continue;
    if (typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

/** An HTML element: `h("td", {class: "num"}, "27350.5")`. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  apply(element, attrs, children);
  return element;
}

/** An SVG element. */
export function s(tag: string, attrs: Attrs = {}, ...children: (Child | Child[])[]): SVGElement {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  apply(element, attrs, children);
  return element;
}

/** Replace all of `parent`'s children. */
export function mount(parent: Element, ...children: (Child | Child[])[]): void {
  parent.replaceChildren();
  apply(parent, {}, children);
}

/** Nanoseconds since the epoch (a JSON integer, possibly beyond 2^53) as local time. */
export function timeOf(ts_ns: number | string): string {
  const ms = Number(BigInt(String(ts_ns)) / 1_000_000n);
  const date = new Date(ms);
  const pad = (n: number, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** A long hash shown short, with the whole of it as a tooltip. */
export function shortHash(hash: string): HTMLElement {
  return h("span", { class: "hash", title: hash, "data-hash": hash }, hash.length > 16 ? `${hash.slice(0, 12)}…${hash.slice(-4)}` : hash);
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}
