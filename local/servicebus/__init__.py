"""A small local Azure Service Bus emulator: an AMQP 1.0 peer on python-qpid-proton.

The official SDK (`azure-servicebus`, sync and `aio`) reaches it with the connection string
`Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=RootManageSharedAccessKey;
SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true` (one line), with which the SDK
speaks plain AMQP and SASL ANONYMOUS to that port.

    python -m local.servicebus --host 127.0.0.1 --port 5672 [--strict]
        [--queue NAME ...] [--max-message-size BYTES] [--key KEY]
        [--lock-duration SECONDS] [--refuse-sends SECONDS] [--delay-sends MS]
        [--session-queue NAME ...] [--jwt-issuer-key PEM_FILE] [--data-dir DIR [--fsync]]

listens on that address only and prints `listening on amqp://HOST:PORT` once ready. With
`--data-dir` the queues outlive the process: every message it acknowledged, and only what
was not completed or received since, is there again after a restart or a kill (`journal`).
Faults are injected by lines on its standard input, each answered `ok COMMAND` (EOF is fine):
`drop` (close every client connection now, as a network failure would), `refuse SECONDS`
(reject sends with com.microsoft:server-busy; 0 ends it), `delay MS` (settle each send
that late; 0 ends it), `outage SECONDS` (stop listening, drop everything, come back on
the same port), `queue NAME` (create a queue, for --strict), `session-queue NAME` (a
session-enabled queue), `count NAME` (print how many
messages a queue holds). In process, `Emulator` offers the same as methods.

The AMQP flow, as the SDK drives it:
1. SASL ANONYMOUS, open, begin: accepted as they come.
2. CBS: the client attaches a sender to `$cbs` and a receiver from `$cbs`, then sends a
   put-token request (no reply-to, a uuid message-id). The SAS token must be signed with
   our key (HMAC-SHA256 of `sr` newline `se`) and unexpired. Any other token (the SDK
   says type `jwt` for both) is an Entra ID token: an RS256 JWT whose audience is
   `https://servicebus.azure.net` and whose signature verifies with the issuer key given
   (`--jwt-issuer-key`; none given: refused), unexpired. The answer goes out on the
   client's `$cbs` receiving link: correlation-id = the request's message-id, application
   properties `status-code` (202, or 401 which the SDK raises as
   ServiceBusAuthenticationError) and `status-description`. Entity links on a
   connection without an accepted token are refused (amqp:unauthorized-access).
3. Sending: the client attaches a sender to an entity (a topic name behaves as a queue;
   in strict mode an unknown one is refused with amqp:not-found and Service Bus's words,
   "could not be found", by which the JavaScript SDK tells MessagingEntityNotFound from
   other not-found errors). Our attach carries
   `max-message-size`, which `create_message_batch()` reads. A transfer is Accepted
   once stored, or Rejected with an error that carries an info map (without one the SDK
   hangs): amqp:link:message-size-exceeded, com.microsoft:server-busy, and on a
   session-enabled queue a message without a session id (group-id), amqp:not-allowed
   with Service Bus's words, which the SDK raises as ServiceBusError. An SDK batch
   (message format 0x80013700) holds one encoded message per data section; each one
   is stored as a message of its own.
4. Receiving from `<queue>` or `<queue>/$deadletterqueue`, as far as the link's credit
   goes. RECEIVE_AND_DELETE (snd-settle-mode settled): sent pre-settled and forgotten.
   PEEK_LOCK: sent unsettled with a 16-byte delivery tag, the SDK's lock token, and
   locked for `lock_duration`. The client's outcome decides: accepted = complete,
   modified = abandon (defer if undeliverable-here), rejected = dead-letter, released =
   give back; we settle echoing that outcome, which the SDK waits for. Abandons and
   expired locks count as deliveries; after `max_delivery_count` the message is
   dead-lettered (MaxDeliveryCountExceeded). Expired messages (header ttl) are dropped
   when their turn comes. On a session-enabled queue a receiver must carry the
   `com.microsoft:session-filter` (a session id, or null for the next session with
   messages that no one holds); our attach names the session and its lock
   (`com.microsoft:locked-until-utc`), and the link gets only that session's messages, in
   order. A second receiver for a held session: com.microsoft:session-cannot-be-locked.
   Asking for the next session while none is free, the attach waits (unanswered, as
   Service Bus leaves it) until a session gets messages or is let go, for at most the
   link's `com.microsoft:timeout` property (ms; both SDKs send their wait in it; 60 s
   without), then com.microsoft:timeout. No filter on a session-enabled queue, or a
   filter on another: amqp:not-allowed with Service Bus's words.
5. `$management` (request/response as for CBS, with `statusCode`): renew-lock,
   update-disposition (settling by lock token, e.g. after a reconnect), peek-message,
   renew-session-lock.

Left out: session state, subscriptions and filters, scheduled messages, receiving
deferred messages, transactions, duplicate detection, entity management.
`tests/test_servicebus_contract.py` runs the same checks against this emulator and, given
a connection string, against a real namespace.

One module per part: `codec` (the AMQP encoding done by hand), `store` (queues, locks, dead
letters, sessions), `journal` (the queues on disk), `sessions` (session filter and lock on
the wire), `nodes` (`$cbs` and `$management` requests), `reactor` (glue for proton's
reactor), `broker` (the AMQP peer) and `emulator` (the container in a thread, faults, the
command line).

The package itself imports nothing: each caller imports the module it needs, so that
importing one part never runs the others (tests/test_code_shape.py: no import cycle).
"""
