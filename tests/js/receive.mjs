// A second SDK as the subscriber: @azure/service-bus (JavaScript) receives from a queue and
// prints what it got as JSON on standard output.
//   node tests/js/receive.mjs CONNECTION_STRING QUEUE COUNT [SESSIONS]
// With SESSIONS, that many session receivers take the next available session each, and
// COUNT is the number of messages per session.
import { ServiceBusClient } from "@azure/service-bus";

const [connectionString, queue, countText, sessionsText] = process.argv.slice(2);
const count = Number(countText);
const client = new ServiceBusClient(connectionString);

function plain(message) {
  return {
    sessionId: message.sessionId ?? null,
    body: Buffer.isBuffer(message.body) ? message.body.toString("utf8") : message.body,
    contentType: message.contentType ?? null,
    timeToLive: message.timeToLive ?? null,
    applicationProperties: message.applicationProperties ?? {},
  };
}

async function drain(receiver, want) {
  const got = [];
  while (got.length < want) {
    const batch = await receiver.receiveMessages(want - got.length, { maxWaitTimeInMs: 2000 });
    if (batch.length === 0) break;
    got.push(...batch);
  }
  await receiver.close();
  return got.map(plain);
}

async function oneSession() {
  const receiver = await client.acceptNextSession(queue, { receiveMode: "receiveAndDelete" });
  return [receiver.sessionId, await drain(receiver, count)];
}

try {
  let result;
  if (sessionsText) {
    const sessions = await Promise.all(Array.from({ length: Number(sessionsText) }, oneSession));
    result = Object.fromEntries(sessions);
  } else {
    result = await drain(client.createReceiver(queue, { receiveMode: "receiveAndDelete" }), count);
  }
  process.stdout.write(JSON.stringify(result));
} finally {
  await client.close();
}
