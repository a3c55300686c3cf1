// The JavaScript SDK's side of the Service Bus contract checks (tests/test_servicebus_contract.py).
//   node tests/js/contract.mjs CONNECTION_STRING QUEUE send
//   node tests/js/contract.mjs CONNECTION_STRING QUEUE accept-next WAIT_MS
// `send` sends one message; `accept-next` takes the next available session and receives
// (and deletes) what it holds. Prints JSON on standard output: {"sessionId", "bodies"} or
// {"sent": true}, or {"error": {"name", "code"}} when the SDK raised.
import { ServiceBusClient } from "@azure/service-bus";

const [connectionString, queue, action, waitText] = process.argv.slice(2);
const client = new ServiceBusClient(connectionString, {
  retryOptions: { maxRetries: 0, timeoutInMs: Number(waitText ?? 10000) },
});

async function acceptNext() {
  const receiver = await client.acceptNextSession(queue, {
    receiveMode: "receiveAndDelete",
    maxAutoLockRenewalDurationInMs: 0,
  });
  const messages = await receiver.receiveMessages(100, { maxWaitTimeInMs: 1000 });
  await receiver.close();
  const text = (body) => (Buffer.isBuffer(body) ? body.toString("utf8") : body);
  return { sessionId: receiver.sessionId, bodies: messages.map((m) => text(m.body)) };
}

async function send() {
  const sender = client.createSender(queue);
  await sender.sendMessages({ body: "contract" });
  await sender.close();
  return { sent: true };
}

let result;
try {
  result = action === "send" ? await send() : await acceptNext();
} catch (error) {
  result = { error: { name: error.name, code: error.code ?? null } };
} finally {
  await client.close();
}
process.stdout.write(JSON.stringify(result));
