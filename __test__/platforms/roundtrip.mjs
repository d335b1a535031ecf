// The round trip every platform binary and every runtime must pass, run from a project
// that installed the packed packages (copied there by the test):
//   <runtime> roundtrip.mjs <redisUrl> [module]
// A stream session created on one manager receives 1,000 sends from another manager in
// order; `delete` closes its stream and `has` follows; client info, capabilities and log
// level round-trip through Redis; a `subscriptions/listen` subscription gets a matching
// notification. Prints one JSON line with what it saw, and which binary it loaded.
import { readFileSync } from 'node:fs';
import process from 'node:process';

const [url, specifier = '@tmcp-rs/session-manager-redis'] = process.argv.slice(2);
const { RedisStreamSessionManager, RedisInfoSessionManager, RedisSubscriptionManager } = await import(specifier);

const SENDS = 1000;
const deadline = (ms) => Date.now() + ms;
async function until(check, ms, what) {
	for (const end = deadline(ms); !check(); ) {
		if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
		await new Promise((r) => setTimeout(r, 10));
	}
}

/** The addon this process mapped, and which C library it runs on (from /proc/self/maps). */
function loaded() {
	const maps = readFileSync('/proc/self/maps', 'utf8');
	const paths = new Set(maps.split('\n').map((l) => l.split(/\s+/).slice(5).join(' ')).filter(Boolean));
	const addon = [...paths].find((p) => /session-manager-redis\.[\w-]+\.node$/.test(p));
	const libc = [...paths].some((p) => /(ld|libc)\.musl-|\/libc\.musl|ld-musl-/.test(p))
		? 'musl'
		: [...paths].some((p) => /\/libc(-[\d.]+)?\.so(\.6)?$/.test(p))
			? 'glibc'
			: 'unknown';
	return { addon: addon?.split('/').pop(), libc };
}

const prefix = `rt-${process.pid}-`;
const holder = new RedisStreamSessionManager(url);
const sender = new RedisStreamSessionManager(url);
const info = new RedisInfoSessionManager(url);
const subscriptions = new RedisSubscriptionManager(url);

const received = [];
let closed = false;
const decoder = new TextDecoder();
const controller = { enqueue: (chunk) => received.push(decoder.decode(chunk)), close: () => (closed = true) };
const id = `${prefix}stream`;
await holder.create(id, controller);
const hasBefore = await sender.has(id);

const sends = [];
for (let i = 0; i < SENDS; i++) sends.push(sender.send([id], `message ${i}`));
await Promise.all(sends);
await until(() => received.length >= SENDS, 30_000, `${SENDS} messages`);
const inOrder = received.length === SENDS && received.every((m, i) => m === `message ${i}`);

await sender.delete(id);
await until(() => closed, 10_000, 'the stream to close');
const hasAfter = await holder.has(id);

await info.setClientInfo(id, { name: 'roundtrip', version: '1.0.0' });
await info.setClientCapabilities(id, { roots: { listChanged: true } });
await info.setLogLevel(id, 'notice');
const clientInfo = await info.getClientInfo(id);
const capabilities = await info.getClientCapabilities(id);
const logLevel = await info.getLogLevel(id);
await info.delete(id);

const notifications = [];
const created = await subscriptions.create(
	{ id: 1, origin: `${prefix}origin`, filters: { toolsListChanged: true } },
	{
		async acknowledge() {},
		async send(notification) {
			notifications.push(notification);
		},
		async close() {},
	},
);
await subscriptions.send({ jsonrpc: '2.0', method: 'notifications/tools/list_changed', params: {} });
await until(() => notifications.length > 0, 10_000, 'the subscription notification');

await holder.close();
await sender.close();
await info.close();
await subscriptions.dispose();

const runtime = globalThis.Bun ? 'bun' : globalThis.Deno ? 'deno' : 'node';
console.log(
	JSON.stringify({
		runtime,
		arch: process.arch,
		...loaded(),
		sent: SENDS,
		received: received.length,
		inOrder,
		hasBefore,
		closed,
		hasAfter,
		clientInfo,
		capabilities,
		logLevel,
		subscriptionCreated: created,
		notification: notifications[0]?.method,
	}),
);
