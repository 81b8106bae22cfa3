// A Node.js consumer of the commerce events on NATS JetStream: the `nats` package and
// the TypeScript generated from protos/ by `npx buf generate`, nothing of the server.
//
// It reads one store's events from the stream through an ordered consumer (from the
// first event the stream holds), decodes each body as the message its `ce-type`
// header names, and prints one JSON line per event: the CloudEvents attributes and
// the payload in canonical JSON. It stops once no event came for 2 seconds.
//
//   npx buf generate && npm --prefix clients/node run build
//   NATS_URL=nats://127.0.0.1:4222 COMMERCE_STORE_ID=7 node clients/node/dist/event_consumer.js

import { type DescMessage, createRegistry, fromBinary, toJson } from "@bufbuild/protobuf";
import { connect } from "nats";

import { file_commerce_customers_v1_customer_events } from "./gen/commerce/customers/v1/customer_events_pb.js";
import { file_commerce_loyalty_v1_loyalty_events } from "./gen/commerce/loyalty/v1/loyalty_events_pb.js";
import { file_commerce_orders_v1_order_events } from "./gen/commerce/orders/v1/order_events_pb.js";

const server = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
const storeId = process.env.COMMERCE_STORE_ID ?? "1";
const stream = process.env.COMMERCE_NATS_STREAM ?? "COMMERCE_EVENTS";
const prefix = process.env.COMMERCE_NATS_SUBJECT_PREFIX ?? "commerce.events";
const IDLE_MS = 2_000;

// Every event message, by its full name: the value of the ce-type header.
const events = createRegistry(
  file_commerce_customers_v1_customer_events,
  file_commerce_orders_v1_order_events,
  file_commerce_loyalty_v1_loyalty_events,
);

async function main(): Promise<void> {
  const connection = await connect({ servers: server });
  try {
    // One subject filter, as a string: NATS servers before 2.10 know no list of them.
    const consumer = await connection
      .jetstream()
      .consumers.get(stream, { filterSubjects: `${prefix}.${storeId}.>` });
    for (;;) {
      const batch = await consumer.fetch({ max_messages: 100, expires: IDLE_MS });
      let received = 0;
      for await (const message of batch) {
        received += 1;
        const attribute = (name: string) => message.headers?.get(`ce-${name}`) ?? "";
        const kind = events.getMessage(attribute("type"));
        console.log(
          JSON.stringify({
            id: attribute("id"),
            type: attribute("type"),
            source: attribute("source"),
            subject: attribute("subject"),
            sequence: attribute("sequence"),
            time: attribute("time"),
            // An unknown type (a newer server): regenerate the client to read it.
            payload: kind ? toJson(kind as DescMessage, fromBinary(kind, message.data)) : null,
          }),
        );
      }
      if (received === 0) break; // nothing came for IDLE_MS
    }
  } finally {
    await connection.close();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
