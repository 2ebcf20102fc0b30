// shopctl talks gRPC to the shop's gateway: register, log in, list products, place an
// order and follow its saga, with the code generated from proto/ into gen/ts.
//
//   shopctl journey --email ada@example.com --password 'correct horse battery'
//   shopctl --token "$TOKEN" -o json order 0b6c...
//
// Every call carries a deadline (--timeout) and, once there is one, the bearer token. A
// failed call exits with 64 + its gRPC code, as grpcurl does.
import { parseArgs } from "node:util";

import {
  create,
  type DescMessage,
  type MessageShape,
  toBinary,
  toJsonString,
} from "@bufbuild/protobuf";

import { ListProductsResponseSchema } from "../../../gen/ts/shop/inventory/v1/inventory_pb.js";
import { type Order, OrderSchema } from "../../../gen/ts/shop/order/v1/order_pb.js";
import { LoginResponseSchema, UserSchema } from "../../../gen/ts/shop/user/v1/user_pb.js";
import { DEFAULT_TIMEOUT_MS, ShopClient } from "./client.js";
import { explain, exitCode, UsageError } from "./errors.js";
import { formatFailure, formatOrder, formatProducts } from "./format.js";
import {
  follow,
  getOrder,
  newIdempotencyKey,
  parseLine,
  products,
  runJourney,
} from "./journey.js";

const USAGE = `usage: shopctl [flags] COMMAND [command flags]

commands:
  journey   register (or reuse) a user, log in, list products, place an order,
            follow it until CONFIRMED or CANCELLED and print its saga timeline
  register  --email E --password P --name N
  login     --email E --password P (prints the access token)
  products  list the products
  place     --line PRODUCT=QTY ... [--key K] [--card C]
  order     ORDER_ID
  follow    [--wait D] ORDER_ID

flags:
  --addr host:port   gateway address ($SHOPCTL_ADDR, default 127.0.0.1:8080)
  --token token      bearer token ($SHOPCTL_TOKEN)
  --timeout D        deadline of each call (default 10s)
  -o text|json|binpb output: text, json (protojson) or binpb (serialized protobuf)
  --email, --password, --name, --line, --key, --card, --wait   command flags
`;

/** A Go-style duration: 500ms, 10s, 1.5m, 1h. */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text);
  if (match === null) {
    throw new UsageError(`invalid duration "${text}" (like 500ms, 10s, 2m)`);
  }
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[match[2] as "ms" | "s" | "m" | "h"];
  return Number(match[1]) * unit;
}

/** parseArgs' own errors (an unknown option, a missing value) are usage errors too. */
function isParseArgsError(err: unknown): boolean {
  return err instanceof Error && "code" in err && String(err.code).startsWith("ERR_PARSE_ARGS");
}

export interface Io {
  stdout: (text: string | Uint8Array) => void;
  stderr: (text: string) => void;
}

export async function run(argv: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  let output = "text";
  let client: ShopClient | undefined;
  let prefix = "shopctl";
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        addr: { type: "string", default: env.SHOPCTL_ADDR || "127.0.0.1:8080" },
        token: { type: "string", default: env.SHOPCTL_TOKEN ?? "" },
        timeout: { type: "string", default: `${DEFAULT_TIMEOUT_MS}ms` },
        output: { type: "string", short: "o", default: "text" },
        email: { type: "string", default: "" },
        password: { type: "string", default: "" },
        name: { type: "string", default: "" },
        key: { type: "string", default: "" },
        card: { type: "string", default: "" },
        wait: { type: "string", default: "30s" },
        line: { type: "string", multiple: true, default: [] },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    output = values.output;
    const [command, ...args] = positionals;
    prefix = `shopctl ${command ?? ""}`.trimEnd();
    if (values.help || command === undefined || !["text", "json", "binpb"].includes(output)) {
      io.stderr(USAGE);
      return 2;
    }
    client = new ShopClient({
      addr: values.addr,
      token: values.token,
      timeoutMs: parseDuration(values.timeout),
    });
    const lines = values.line.map(parseLine);
    const waitMs = parseDuration(values.wait);
    // Journey steps: on stdout for people, on stderr when stdout is data.
    const progress = (step: string, detail: string) => {
      const line = `${step.padEnd(9)} ${detail}\n`;
      if (output === "text") {
        io.stdout(line);
      } else {
        io.stderr(line);
      }
    };
    const print = <Desc extends DescMessage>(
      schema: Desc,
      message: MessageShape<Desc>,
      text: () => string,
    ) => {
      if (output === "json") {
        io.stdout(`${toJsonString(schema, message, { prettySpaces: 2 })}\n`);
      } else if (output === "binpb") {
        io.stdout(toBinary(schema, message));
      } else {
        io.stdout(text());
      }
    };
    const printOrder = (order: Order) => print(OrderSchema, order, () => formatOrder(order));

    switch (command) {
      case "journey": {
        const result = await runJourney(
          client,
          {
            email: values.email,
            password: values.password,
            name: values.name || values.email.split("@")[0] || "",
            lines,
            card: values.card,
            idempotencyKey: values.key,
            waitMs,
          },
          progress,
        );
        printOrder(result.order);
        return 0;
      }
      case "register": {
        const { email, password, name } = values;
        const { user } = await client.users.register({ email, password, name });
        if (user !== undefined) {
          print(UserSchema, user, () => `registered ${user.email} as user ${user.userId}\n`);
        }
        return 0;
      }
      case "login": {
        const reply = await client.users.login({ email: values.email, password: values.password });
        // Text is the bare token, for `export SHOPCTL_TOKEN=$(shopctl login ...)`.
        print(LoginResponseSchema, reply, () => `${reply.accessToken}\n`);
        return 0;
      }
      case "products": {
        const all = await products(client);
        const reply = create(ListProductsResponseSchema, { products: all });
        print(ListProductsResponseSchema, reply, () => formatProducts(all));
        return 0;
      }
      case "place": {
        const reply = await client.orders.placeOrder({
          idempotencyKey: values.key || newIdempotencyKey(),
          lines,
          paymentCard: values.card,
        });
        if (reply.order !== undefined) {
          printOrder(reply.order);
        }
        return 0;
      }
      case "order":
      case "follow": {
        const [orderId] = args;
        if (orderId === undefined || args.length !== 1) {
          throw new UsageError(`${command} needs one ORDER_ID`);
        }
        printOrder(
          command === "order"
            ? await getOrder(client, orderId)
            : await follow(client, orderId, { waitMs, progress }),
        );
        return 0;
      }
      default:
        throw new UsageError(`unknown command "${command}" (see shopctl -h)`);
    }
  } catch (err) {
    const failure = explain(err);
    if (failure === undefined) {
      io.stderr(`${prefix}: ${err instanceof Error ? err.message : String(err)}\n`);
    } else if (output === "json") {
      io.stderr(`${JSON.stringify(failure)}\n`);
    } else {
      io.stderr(`${prefix}: ${failure.step ? `${failure.step}: ` : ""}${formatFailure(failure)}`);
    }
    return isParseArgsError(err) ? 2 : exitCode(err);
  } finally {
    client?.close();
  }
}
