// Text output for people.
import { timestampDate } from "@bufbuild/protobuf/wkt";

import type { Money } from "../../../gen/ts/shop/common/v1/common_pb.js";
import type { Product } from "../../../gen/ts/shop/inventory/v1/inventory_pb.js";
import { type Order, OrderStatus } from "../../../gen/ts/shop/order/v1/order_pb.js";
import type { Failure } from "./errors.js";

/** Integer minor units as "12.50 EUR" (the shop's currencies all have two decimals). */
export function formatMoney(money: Money | undefined): string {
  const amount = money?.amountMinor ?? 0n;
  const sign = amount < 0n ? "-" : "";
  const abs = amount < 0n ? -amount : amount;
  return `${sign}${abs / 100n}.${String(abs % 100n).padStart(2, "0")} ${money?.currency ?? ""}`;
}

/** Elapsed time the way Go prints a duration rounded to milliseconds: 232ms, 1.5s. */
export function formatElapsed(ms: number): string {
  const rounded = Math.round(ms);
  return rounded < 1000 ? `${rounded}ms` : `${rounded / 1000}s`;
}

/** An RFC 3339 time in UTC, to the second. */
export function formatTime(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** CONFIRMED, from OrderStatus.CONFIRMED. */
export function statusName(status: OrderStatus): string {
  return OrderStatus[status] ?? String(status);
}

export function productSummary(products: Product[]): string {
  return products
    .map((p) => `${p.productId} (${formatMoney(p.price)}, ${p.available} available)`)
    .join(", ");
}

/** Rows as columns two spaces apart. */
function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  return rows
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
        .join("  ")
        .trimEnd(),
    )
    .map((line) => `${line}\n`)
    .join("");
}

export function formatProducts(products: Product[]): string {
  return table([
    ["PRODUCT", "NAME", "PRICE", "AVAILABLE"],
    ...products.map((p) => [p.productId, p.name, formatMoney(p.price), String(p.available)]),
  ]);
}

/** The order, its lines and its saga timeline (times in UTC). */
export function formatOrder(order: Order): string {
  let out = `order ${order.orderId}  ${statusName(order.status)}  total ${formatMoney(order.total)}\n`;
  if (order.cancelReason !== "") {
    out += `cancelled: ${order.cancelReason}\n`;
  }
  out += table(
    order.lines.map((l) => [
      `  ${l.quantity} x ${l.productId}`,
      formatMoney(l.unitPrice),
      formatMoney(l.lineTotal),
    ]),
  );
  out += "saga timeline:\n";
  out += table(
    order.timeline.map((e) => [
      `  ${e.at ? timestampDate(e.at).toISOString().slice(11, 23) : "?"}`,
      e.step,
      statusName(e.status),
      e.detail,
    ]),
  );
  return out;
}

export function formatFailure(failure: Failure): string {
  let out = `${failure.code}: ${failure.message}\n`;
  for (const v of failure.fieldViolations ?? []) {
    out += `  ${v.field}: ${v.description}\n`;
  }
  return out;
}
