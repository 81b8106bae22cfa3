// A Node.js caller of the commerce services, through TypeScript generated from
// protos/ by `npx buf generate` and plain gRPC (HTTP/2) from @connectrpc/connect-node.
//
// It walks one customer through the API and checks every answer: creates the
// customer, places an order for it (retried with the same request_id), reads the
// order back with its embedded customer, pages through the customer's orders, reads
// the customer's statistics, follows the store's change feed (a server stream) until
// both orders' OrderCreated events came, and decodes the error details of two failures.
//
//   npx buf generate && npm --prefix clients/node run build
//   COMMERCE_TARGET=http://127.0.0.1:50051 COMMERCE_STORE_ID=1 npm --prefix clients/node run walkthrough
//
// It prints one JSON line of what it saw, and exits 1 at the first check that fails.

import { strict as assert } from "node:assert";
import { randomUUID } from "node:crypto";

import { create } from "@bufbuild/protobuf";
import { anyUnpack, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { CustomerService } from "./gen/commerce/customers/v1/customer_service_pb.js";
import { EventService } from "./gen/commerce/events/v1/event_service_pb.js";
import { OrderCreatedSchema } from "./gen/commerce/orders/v1/order_events_pb.js";
import { OrderLineItemSchema, OrderStatus } from "./gen/commerce/orders/v1/order_pb.js";
import { CustomerOrderService } from "./gen/commerce/orders/v1/customer_order_service_pb.js";
import { OrderService } from "./gen/commerce/orders/v1/order_service_pb.js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  ResourceInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

const target = process.env.COMMERCE_TARGET ?? "http://127.0.0.1:50051";
// int64 fields are bigint in protobuf-es: ids, money and counts never lose precision.
const storeId = BigInt(process.env.COMMERCE_STORE_ID ?? "1");

const transport = createGrpcTransport({ baseUrl: target });
const customers = createClient(CustomerService, transport);
const orders = createClient(OrderService, transport);
const customerOrders = createClient(CustomerOrderService, transport);
const events = createClient(EventService, transport);

// Every call carries a deadline: the server bounds its own work by it too.
const callOptions = { timeoutMs: 10_000 };

/** The ConnectError a call fails with; an AssertionError if it succeeds. */
async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  assert.fail("the call was expected to fail");
}

async function main(): Promise<void> {
  const email = `node-${randomUUID()}@example.com`;
  const { customer } = await customers.createCustomer(
    { storeId, email, password: "correct horse", firstName: "Noa", lastName: "Node" },
    callOptions,
  );
  assert.ok(customer, "CreateCustomer returns the customer");
  assert.equal(customer.email, email);

  // A retry with the same request_id returns the first order instead of a second one.
  const placeOrder = {
    storeId,
    customerId: customer.customerId,
    currencyCode: "EUR",
    requestId: randomUUID(),
    lineItems: [
      create(OrderLineItemSchema, { sku: "MUG-1", name: "Mug", quantity: 2, unitPriceMinor: 1299n }),
      create(OrderLineItemSchema, { sku: "TEE-2", name: "T-shirt", quantity: 1, unitPriceMinor: 2500n }),
    ],
  };
  const placed = (await orders.createOrder(placeOrder, callOptions)).order;
  const retried = (await orders.createOrder(placeOrder, callOptions)).order;
  assert.ok(placed && retried);
  assert.equal(retried.orderId, placed.orderId, "a retried CreateOrder creates nothing new");
  assert.equal(placed.totalMinor, 2n * 1299n + 2500n, "the server computes the total");
  assert.equal(placed.status, OrderStatus.PENDING);

  const { order } = await orders.getOrder({ storeId, orderId: placed.orderId }, callOptions);
  assert.ok(order?.customer, "GetOrder embeds the commerce.customers.v1.Customer");
  assert.equal(order.customer.email, email);
  assert.deepEqual(
    order.lineItems.map((item) => [item.lineNumber, item.sku, item.lineTotalMinor]),
    [
      [1, "MUG-1", 2598n],
      [2, "TEE-2", 2500n],
    ],
  );
  assert.ok(order.createTime, "orders carry their creation time");
  const created = timestampDate(order.createTime);
  assert.ok(Math.abs(Date.now() - created.getTime()) < 10 * 60_000, "create_time is now-ish");

  // A second order, then the history one order per page, newest first.
  const second = (
    await orders.createOrder(
      { ...placeOrder, requestId: randomUUID(), lineItems: placeOrder.lineItems.slice(1) },
      callOptions,
    )
  ).order;
  assert.ok(second);
  const history: bigint[] = [];
  let pageToken = "";
  do {
    const page = await customerOrders.listCustomerOrders(
      { storeId, customerId: customer.customerId, pageSize: 1, pageToken },
      callOptions,
    );
    history.push(...page.orders.map((listed) => listed.orderId));
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  assert.deepEqual(history, [second.orderId, placed.orderId]);

  // A status change carries the etag it was decided on and a request_id: its retry
  // answers what the first try answered instead of FAILED_PRECONDITION.
  const cancel = {
    storeId,
    orderId: second.orderId,
    etag: second.etag,
    reason: "changed my mind",
    requestId: randomUUID(),
  };
  const cancelled = (await orders.cancelOrder(cancel, callOptions)).order;
  const cancelledAgain = (await orders.cancelOrder(cancel, callOptions)).order;
  assert.equal(cancelled?.status, OrderStatus.CANCELLED);
  assert.equal(cancelledAgain?.etag, cancelled?.etag);
  const { stats } = await customerOrders.getCustomerOrderStats(
    { storeId, customerId: customer.customerId },
    callOptions,
  );
  assert.ok(stats);
  assert.equal(stats.totalOrders, 1n, "a cancelled order counts in no statistic");
  assert.deepEqual(
    stats.totalSpentPerCurrency.map((money) => [money.currencyCode, money.amountMinor]),
    [["EUR", placed.total?.amountMinor]],
  );

  // The change feed: the store's OrderCreated events from the oldest, then as they come
  // (an event may follow its commit by a moment), until both orders' events are in.
  const awaited = new Set(history.map((orderId) => `orders/${orderId}`));
  const eventSubjects: string[] = [];
  const stop = new AbortController();
  try {
    const feed = events.streamEvents(
      { storeId, types: [OrderCreatedSchema.typeName] },
      { signal: stop.signal, timeoutMs: 10_000 },
    );
    for await (const { event } of feed) {
      assert.ok(event?.payload, "an event carries its payload as a google.protobuf.Any");
      const orderCreated = anyUnpack(event.payload, OrderCreatedSchema);
      assert.ok(orderCreated?.order, event.type);
      if (orderCreated.order.customerId !== customer.customerId) continue;
      assert.equal(orderCreated.customer, customer.name, "an event names the customer");
      assert.equal(orderCreated.order.customer, undefined, "and embeds no copy of it");
      eventSubjects.push(event.subject);
      awaited.delete(event.subject);
      if (awaited.size === 0) break;
    }
  } finally {
    stop.abort(); // a stream follows new events until its caller stops it
  }
  assert.equal(awaited.size, 0, "the feed brought both orders' events");

  // Errors: a status code plus google.rpc details, decoded with the generated schemas.
  const invalid = await failure(
    customers.createCustomer({ storeId, email: "not an email", password: "short" }, callOptions),
  );
  assert.equal(invalid.code, Code.InvalidArgument);
  const violations = invalid
    .findDetails(BadRequestSchema)
    .flatMap((detail) => detail.fieldViolations.map((violation) => violation.field));
  assert.deepEqual(violations.sort(), ["email", "password"]);

  const missing = await failure(
    customers.getCustomer({ storeId, customerId: 9_000_000_000_000_000_000n }, callOptions),
  );
  assert.equal(missing.code, Code.NotFound);
  const [info] = missing.findDetails(ErrorInfoSchema);
  assert.equal(info?.domain, "commerce.customers.v1");
  assert.equal(info?.reason, "CUSTOMER_NOT_FOUND");
  assert.equal(
    missing.findDetails(ResourceInfoSchema)[0]?.resourceName,
    `stores/${storeId}/customers/9000000000000000000`,
  );

  console.log(
    JSON.stringify({
      customerId: customer.customerId.toString(),
      orderIds: history.map(String),
      orderNumber: placed.orderNumber,
      totalMinor: placed.totalMinor.toString(),
      invalidArgumentFields: violations,
      notFoundReason: info?.reason,
      eventSubjects,
    }),
  );
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
