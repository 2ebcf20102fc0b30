// One gRPC transport to the gateway and a client per service, from the code that
// `buf generate` writes into gen/ts.
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { InventoryService } from "../../../gen/ts/shop/inventory/v1/inventory_pb.js";
import { OrderService } from "../../../gen/ts/shop/order/v1/order_pb.js";
import { UserService } from "../../../gen/ts/shop/user/v1/user_pb.js";

export const DEFAULT_TIMEOUT_MS = 10_000;

export interface Options {
  /** The gateway's host:port; the local gateway speaks plaintext HTTP/2. */
  addr: string;
  /** Sent as `authorization: Bearer <token>`; empty sends no header. */
  token?: string;
  /** The deadline of each call, so a stuck gateway never hangs the client. */
  timeoutMs?: number;
}

export class ShopClient {
  readonly users: Client<typeof UserService>;
  readonly orders: Client<typeof OrderService>;
  readonly inventory: Client<typeof InventoryService>;
  token: string;
  private readonly sessions: Http2SessionManager;

  constructor(options: Options) {
    this.token = options.token ?? "";
    // Read the token per call: a login in the middle of a journey changes it.
    const bearer: Interceptor = (next) => (req) => {
      if (this.token !== "") {
        req.header.set("authorization", `Bearer ${this.token}`);
      }
      return next(req);
    };
    const baseUrl = `http://${options.addr}`;
    this.sessions = new Http2SessionManager(baseUrl);
    const transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.sessions,
      interceptors: [bearer],
      // Every call gets this deadline (sent as grpc-timeout) unless it sets its own.
      defaultTimeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    });
    this.users = createClient(UserService, transport);
    this.orders = createClient(OrderService, transport);
    this.inventory = createClient(InventoryService, transport);
  }

  /** Close the HTTP/2 connection (an idle one would keep Node running for a while). */
  close(): void {
    this.sessions.abort();
  }
}
