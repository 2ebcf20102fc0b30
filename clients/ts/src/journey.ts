// The order journey: register, log in, list products, place an order, follow its saga.
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";

import type { Product } from "../../../gen/ts/shop/inventory/v1/inventory_pb.js";
import {
  type Order,
  type OrderLineInput,
  OrderLineInputSchema,
  OrderStatus,
} from "../../../gen/ts/shop/order/v1/order_pb.js";
import type { User } from "../../../gen/ts/shop/user/v1/user_pb.js";
import type { ShopClient } from "./client.js";
import { StepError, UsageError } from "./errors.js";
import { formatElapsed, formatMoney, formatTime, productSummary, statusName } from "./format.js";

/** Hears about each step as it happens. */
export type Progress = (step: string, detail: string) => void;

const quiet: Progress = () => {};

export function isFinal(status: OrderStatus): boolean {
  return status === OrderStatus.CONFIRMED || status === OrderStatus.CANCELLED;
}

/** A key for PlaceOrder, chosen once per order so that a retry places nothing twice. */
export function newIdempotencyKey(): string {
  return `shopctl-${randomBytes(16).toString("hex")}`;
}

/** An order line written as PRODUCT=QUANTITY (or PRODUCT, for one). */
export function parseLine(spec: string): OrderLineInput {
  const [productId = "", qty] = spec.split("=", 2);
  const quantity = qty === undefined ? 1 : Number(qty);
  if (!Number.isInteger(quantity)) {
    throw new UsageError(`line "${spec}": quantity "${qty}" is not a whole number`);
  }
  // The range is left to the server, which explains it better.
  return create(OrderLineInputSchema, { productId, quantity });
}

export async function products(client: ShopClient): Promise<Product[]> {
  const all: Product[] = [];
  let pageToken = "";
  do {
    const reply = await client.inventory.listProducts({ pageSize: 100, pageToken });
    all.push(...reply.products);
    pageToken = reply.nextPageToken;
  } while (pageToken !== "");
  return all;
}

export async function getOrder(client: ShopClient, orderId: string): Promise<Order> {
  const reply = await client.orders.getOrder({ orderId });
  if (reply.order === undefined) {
    throw new ConnectError("GetOrder answered no order", Code.Internal);
  }
  return reply.order;
}

/** Read the order every pollMs until its saga ends or waitMs pass (each read has its own deadline). */
export async function follow(
  client: ShopClient,
  orderId: string,
  { pollMs = 200, waitMs = 30_000, progress = quiet } = {},
): Promise<Order> {
  const started = Date.now();
  let last = OrderStatus.UNSPECIFIED;
  for (;;) {
    const order = await getOrder(client, orderId);
    const elapsed = formatElapsed(Date.now() - started);
    if (order.status !== last) {
      last = order.status;
      progress("status", `${statusName(last)} after ${elapsed}`);
    }
    if (isFinal(order.status)) {
      return order;
    }
    if (Date.now() - started > waitMs) {
      throw new ConnectError(
        `order ${orderId} still ${statusName(last)} after ${elapsed}`,
        Code.DeadlineExceeded,
      );
    }
    await sleep(pollMs);
  }
}

export interface Journey {
  email: string;
  password: string;
  name: string;
  /** None orders one of the first product in stock. */
  lines?: OrderLineInput[];
  card?: string;
  idempotencyKey?: string;
  pollMs?: number;
  waitMs?: number;
}

export interface JourneyResult {
  user: User | undefined;
  products: Product[];
  order: Order;
}

async function step<T>(name: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw new StepError(name, err);
  }
}

/** Register (an existing email is fine: the journey can run again), log in, list the
 *  products, place the order and follow it until its saga ends. */
export async function runJourney(
  client: ShopClient,
  journey: Journey,
  progress: Progress = quiet,
): Promise<JourneyResult> {
  const { email, password, name } = journey;
  try {
    const { user } = await client.users.register({ email, password, name });
    progress("register", `${user?.email} is user ${user?.userId}`);
  } catch (err) {
    if (!(err instanceof ConnectError && err.code === Code.AlreadyExists)) {
      throw new StepError("register", err);
    }
    progress("register", `${email} is already registered`);
  }

  const login = await step("login", () => client.users.login({ email, password }));
  client.token = login.accessToken;
  progress(
    "login",
    `token for user ${login.user?.userId}, expires ${login.expiresAt ? formatTime(timestampDate(login.expiresAt)) : "?"}`,
  );

  const all = await step("list products", () => products(client));
  progress("products", `${all.length}: ${productSummary(all)}`);

  let lines = journey.lines ?? [];
  if (lines.length === 0) {
    const inStock = all.find((p) => p.available > 0);
    if (inStock === undefined) {
      throw new StepError("place order", new Error("no product is in stock"));
    }
    lines = [create(OrderLineInputSchema, { productId: inStock.productId, quantity: 1 })];
  }
  const idempotencyKey = journey.idempotencyKey || newIdempotencyKey();
  const placed = await step("place order", async () => {
    const reply = await client.orders.placeOrder({
      idempotencyKey,
      lines,
      paymentCard: journey.card ?? "",
    });
    if (reply.order === undefined) {
      throw new ConnectError("PlaceOrder answered no order", Code.Internal);
    }
    return reply.order;
  });
  progress(
    "place",
    `order ${placed.orderId} (key ${idempotencyKey}): ${formatMoney(placed.total)}, ${statusName(placed.status)}`,
  );

  const order = await step("follow order", () =>
    follow(client, placed.orderId, {
      pollMs: journey.pollMs ?? 200,
      waitMs: journey.waitMs ?? 30_000,
      progress,
    }),
  );
  return { user: login.user, products: all, order };
}
