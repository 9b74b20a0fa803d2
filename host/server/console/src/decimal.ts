//! Exact arithmetic on the API's decimal strings ("27350.5"). Prices,
//! quantities and money are shown exactly as the host wrote them; the few
//! derived numbers the console shows (spread, cumulative depth) are computed
//! here on integers, never through floating point.

interface Fixed {
  units: bigint;
  scale: number;
}

function parse(text: string): Fixed {
  const negative = text.startsWith("-");
  const body = negative || text.startsWith("+") ? text.slice(1) : text;
  const [whole, fraction = ""] = body.split(".");
  const units = BigInt((whole || "0") + fraction);
  return { units: negative ? -units : units, scale: fraction.length };
}

function rescale(value: Fixed, scale: number): bigint {
  return value.units * 10n ** BigInt(scale - value.scale);
}

function format(units: bigint, scale: number): string {
  const negative = units < 0n;
  const digits = (negative ? -units : units).toString().padStart(scale + 1, "0");
  const text = scale === 0 ? digits : `${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
  return negative ? `-${text}` : text;
}

/** Negative, zero or positive as `a` is below, equal to or above `b`. */
export function compare(a: string, b: string): number {
  const x = parse(a);
  const y = parse(b);
  const scale = Math.max(x.scale, y.scale);
  const d = rescale(x, scale) - rescale(y, scale);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}

export function isZero(a: string): boolean {
  return parse(a).units === 0n;
}

export function add(a: string, b: string): string {
  const x = parse(a);
  const y = parse(b);
  const scale = Math.max(x.scale, y.scale);
  return format(rescale(x, scale) + rescale(y, scale), scale);
}

export function sub(a: string, b: string): string {
  return add(a, b.startsWith("-") ? b.slice(1) : `-${b}`);
}

/** The sum of decimal strings, at the largest scale among them. */
export function sum(values: string[]): string {
  return values.reduce((total, value) => add(total, value), "0");
}
