// shopctl against an in-process fake gateway (Connect's gRPC server on node:http2):
// public Register/Login, a bearer token for the rest, an order that confirms later.
import assert from "node:assert/strict";
import { createServer, type Http2Server } from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";

import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";

import { InventoryService } from "../../../gen/ts/shop/inventory/v1/inventory_pb.js";
import {
  type Order,
  OrderSchema,
  OrderService,
  OrderStatus,
  TimelineEntrySchema,
} from "../../../gen/ts/shop/order/v1/order_pb.js";
import { UserService } from "../../../gen/ts/shop/user/v1/user_pb.js";
import { ShopClient } from "../src/client.js";
import { BadRequestSchema, explain, exitCode, StepError } from "../src/errors.js";
import { formatMoney } from "../src/format.js";
import { parseLine, runJourney } from "../src/journey.js";
import { parseDuration, run } from "../src/main.js";

const TOKEN = "tok-1";
const ORDER_ID = "0b6c0f4e-7f2a-4c1e-9d3a-5a8e2f1b9c7d";
const seen: { method: string; timeoutMs: number | undefined }[] = [];
let order: Order | undefined;
let reads = 0;

function authorize(ctx: HandlerContext): void {
  seen.push({ method: ctx.method.name, timeoutMs: ctx.timeoutMs() });
  if (ctx.requestHeader.get("authorization") !== `Bearer ${TOKEN}`) {
    throw new ConnectError("Jwt is missing", Code.Unauthenticated);
  }
}

function routes(router: ConnectRouter): void {
  router.service(UserService, {
    register(req, ctx) {
      seen.push({ method: ctx.method.name, timeoutMs: ctx.timeoutMs() });
      if (!req.email.includes("@")) {
        // What the services answer for a bad request.
        throw new ConnectError("invalid email", Code.InvalidArgument, undefined, [
          {
            desc: BadRequestSchema,
            value: {
              fieldViolations: [
                { field: "email", description: "must be a valid email address [string.email]" },
              ],
            },
          },
        ]);
      }
      return { user: { userId: "u-1", email: req.email } };
    },
    login(req, ctx) {
      seen.push({ method: ctx.method.name, timeoutMs: ctx.timeoutMs() });
      return { accessToken: TOKEN, tokenType: "Bearer", user: { userId: "u-1", email: req.email } };
    },
  });
  router.service(InventoryService, {
    listProducts(_req, ctx) {
      authorize(ctx);
      const price = { amountMinor: 1250n, currency: "EUR" };
      return {
        products: [
          { productId: "sold-out", price },
          { productId: "widget", name: "Widget", price, available: 5 },
        ],
      };
    },
  });
  router.service(OrderService, {
    placeOrder(req, ctx) {
      authorize(ctx);
      order = create(OrderSchema, {
        orderId: ORDER_ID,
        status: OrderStatus.PENDING,
        idempotencyKey: req.idempotencyKey,
        lines: req.lines.map((l) => ({ productId: l.productId, quantity: l.quantity })),
        total: { amountMinor: 1250n, currency: "EUR" },
        timeline: [{ at: timestampNow(), step: "order.placed", status: OrderStatus.PENDING }],
      });
      return { order };
    },
    getOrder(_req, ctx) {
      authorize(ctx);
      assert.ok(order);
      reads += 1;
      if (reads === 3) {
        // The saga ends while the client follows the order.
        order.status = OrderStatus.CONFIRMED;
        order.timeline.push(
          create(TimelineEntrySchema, {
            at: timestampNow(),
            step: "order.confirmed",
            status: OrderStatus.CONFIRMED,
          }),
        );
      }
      return { order };
    },
  });
}

let server: Http2Server;
let addr = "";

before(async () => {
  server = createServer(connectNodeAdapter({ routes }));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  addr = `127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(() => {
  server.close();
});

test("the journey follows the order until it is confirmed", async (t) => {
  seen.length = 0;
  const steps: string[] = [];
  const client = new ShopClient({ addr, timeoutMs: 5_000 });
  t.after(() => client.close());
  const result = await runJourney(
    client,
    { email: "ada@example.com", password: "correct horse battery", name: "Ada", pollMs: 1 },
    (step) => steps.push(step),
  );
  assert.equal(result.order.status, OrderStatus.CONFIRMED);
  assert.equal(result.order.lines[0]?.productId, "widget", "the first product in stock");
  assert.match(result.order.idempotencyKey, /^shopctl-[0-9a-f]{32}$/);
  assert.deepEqual(steps, ["register", "login", "products", "place", "status", "status"]);
  const withoutDeadline = seen.filter((s) => s.timeoutMs === undefined);
  assert.deepEqual(withoutDeadline, [], "every call has a deadline");
});

test("no token is UNAUTHENTICATED, exit code 80 like grpcurl", async (t) => {
  const client = new ShopClient({ addr });
  t.after(() => client.close());
  const err = await client.inventory.listProducts({}).catch((e: unknown) => e);
  assert.equal(explain(err)?.code, "UNAUTHENTICATED");
  assert.equal(exitCode(err), 64 + 16);
});

test("the server's google.rpc.BadRequest is decoded", async (t) => {
  const client = new ShopClient({ addr });
  t.after(() => client.close());
  const err = await client.users
    .register({ email: "nope", password: "correct horse", name: "Ada" })
    .catch((e: unknown) => e);
  assert.deepEqual(explain(new StepError("register", err)), {
    step: "register",
    code: "INVALID_ARGUMENT",
    message: "invalid email",
    fieldViolations: [
      { field: "email", description: "must be a valid email address [string.email]" },
    ],
  });
  assert.equal(exitCode(err), 64 + 3);
});

test("the command prints JSON, and failures as JSON on stderr", async () => {
  const out: string[] = [];
  const errors: string[] = [];
  const io = {
    stdout: (text: string | Uint8Array) => out.push(String(text)),
    stderr: (text: string) => errors.push(text),
  };
  const code = await run(["--addr", addr, "-o", "json", "register", "--email", "x"], {}, io);
  assert.equal(code, 67);
  assert.equal(JSON.parse(errors.join("")).fieldViolations[0].field, "email");

  out.length = 0;
  const ok = await run(["--addr", addr, "--token", TOKEN, "-o", "json", "products"], {}, io);
  assert.equal(ok, 0);
  assert.equal(JSON.parse(out.join("")).products[1].productId, "widget");
});

test("usage errors exit 2", async () => {
  const io = { stdout: () => {}, stderr: () => {} };
  for (const argv of [[], ["frobnicate"], ["--bogus"], ["order"], ["place", "--line", "w=x"]]) {
    assert.equal(await run(["--addr", addr, ...argv], {}, io), 2, argv.join(" "));
  }
});

test("lines, durations and money", () => {
  assert.deepEqual(
    [parseLine("widget=3").quantity, parseLine("widget").quantity],
    [3, 1],
  );
  assert.equal(parseDuration("1.5s"), 1500);
  assert.equal(parseDuration("250ms"), 250);
  assert.equal(formatMoney({ $typeName: "shop.common.v1.Money", amountMinor: 1250n, currency: "EUR" }), "12.50 EUR");
  assert.equal(formatMoney({ $typeName: "shop.common.v1.Money", amountMinor: 5n, currency: "EUR" }), "0.05 EUR");
});
