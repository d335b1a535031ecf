// One measurement in its own process: `node bench/worker.mjs <impl> <scenario> <json params>`.
// impl: "upstream" (@tmcp/session-manager-redis) or "ours". Prints one JSON line with the
// figures and the counts that prove the work was done; exits non-zero when a check fails.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const [impl, scenario, paramsJson] = process.argv.slice(2);
const p = JSON.parse(paramsJson);
let unhandled = 0;
process.on('unhandledRejection', () => unhandled++);

// impl "none": a scenario that uses neither (jsonFloor). coldStart imports it itself, timed.
const load = () =>
	impl === 'upstream' ? import('@tmcp/session-manager-redis') : impl === 'ours' ? import('../index.mjs') : {};
const mod = scenario === 'coldStart' ? {} : await load();
const { RedisInfoSessionManager, RedisStreamSessionManager, RedisSubscriptionManager } = mod;
// `observe` (ours only): a diagnostics subscriber as an APM would attach one, on every
// channel of ours: a duration per traced call, a count of every other event.
if (p.observe) {
	const dc = await import('node:diagnostics_channel');
	const { CHANNELS } = mod;
	const started = new WeakMap();
	const seen = { traced: 0, totalMs: 0, events: 0 };
	dc.tracingChannel(CHANNELS.command).subscribe({
		start: (context) => started.set(context, performance.now()),
		end() {},
		asyncStart() {},
		asyncEnd(context) {
			seen.traced++;
			seen.totalMs += performance.now() - started.get(context);
		},
		error() {},
	});
	for (const name of [CHANNELS.connection, CHANNELS.topology, CHANNELS.error]) dc.subscribe(name, () => seen.events++);
	globalThis.observed = seen;
}
// `options` (ours only): e.g. { cluster: true } for the cluster rows.
const newInfo = () => new RedisInfoSessionManager(p.url, p.options);
const newStreams = () => new RedisStreamSessionManager(p.url, p.options);

function fail(message) {
	console.error(`bench check failed (${impl} ${scenario}): ${message}`);
	process.exit(2);
}
const send = (msg) => (process.send ? process.send(msg) : console.log(JSON.stringify(msg)));
const done = (result, { stay = false } = {}) => {
	send({ type: 'result', result: { ...result, unhandled } });
	// Upstream never closes its connections; end the process explicitly for both. A
	// sender stays until told: upstream's send resolves before its PUBLISH is written.
	if (!stay) setTimeout(() => process.exit(0), 10);
};
/** Resolves at the orchestrator's `measure` message (heldMemory). */
let measureResolve;
const measure = new Promise((resolve) => (measureResolve = resolve));
process.on('message', (m) => {
	if (m === 'exit') process.exit(0);
	if (m === 'report') send({ type: 'progress', received: progress.received });
	if (m === 'measure') measureResolve();
});
const progress = { received: 0 };
const until = (ms) => performance.now() + ms;

/**
 * CPU time (ms) of the main thread alone: the event loop our users' servers run out of
 * first. Native threads (tokio, libuv's pool) are not counted. Read from
 * /proc/self/task/<pid>/schedstat (time on the CPU, in nanoseconds); where the kernel
 * has no schedstat, from .../stat in clock ticks (10 ms each), which is too coarse for
 * figures below a microsecond per message.
 */
const taskPath = `/proc/self/task/${process.pid}`;
const hasSchedstat = (() => {
	try {
		return Number.isFinite(Number(readFileSync(`${taskPath}/schedstat`, 'utf8').split(' ')[0]));
	} catch {
		return false;
	}
})();
function mainThreadCpuMs() {
	if (hasSchedstat) return Number(readFileSync(`${taskPath}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
	const fields = readFileSync(`${taskPath}/stat`, 'utf8').split(') ')[1].split(' ');
	// After "pid (comm) ", field 3 is the state: utime and stime are fields 14 and 15.
	return (Number(fields[11]) + Number(fields[12])) * 10;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** process.memoryUsage() after three collections (needs --expose-gc). */
async function afterGc() {
	for (let i = 0; i < 3; i++) {
		globalThis.gc();
		await sleep(10);
	}
	return process.memoryUsage();
}

const clientInfo = {
	name: 'bench-client',
	version: '1.0.0',
	title: 'x'.repeat(700),
	icons: [{ src: 'https://example.invalid/icon.png', mimeType: 'image/png', sizes: ['48x48'] }],
	websiteUrl: 'https://example.invalid',
	description: 'A client info object of about one kilobyte, like a real MCP client sends.',
};

/** Runs `concurrency` loops of `op(i)` for `ms`; returns completed ops per second. */
async function loops(concurrency, ms, op) {
	let count = 0;
	const end = until(ms);
	const start = performance.now();
	await Promise.all(
		Array.from({ length: concurrency }, async (_, lane) => {
			for (let i = 0; performance.now() < end; i++) {
				await op(lane, i);
				count++;
			}
		}),
	);
	return (count / (performance.now() - start)) * 1000;
}

/** Runs `job(i)` for i = 0..n-1 with `concurrency` of them in flight. */
async function inLanes(n, concurrency, job) {
	let next = 0;
	await Promise.all(
		Array.from({ length: concurrency }, async () => {
			while (next < n) await job(next++);
		}),
	);
}

/** A controller that counts what it receives; `onChunk(text)` sees each chunk. */
function counter(onChunk) {
	const decoder = new TextDecoder();
	return { enqueue: (chunk) => onChunk(decoder.decode(chunk)), close() {}, error() {} };
}

/**
 * infoSetGet's loop: each lane writes a fresh value and reads it back. Returns pairs per
 * second and the main thread's CPU per pair (µs).
 */
async function setGetPairs(info) {
	let bad = 0;
	let pairs = 0;
	const cpuBefore = mainThreadCpuMs();
	const perSecond = await loops(p.concurrency, p.ms, async (lane, i) => {
		const id = `s${lane}`;
		const value = { ...clientInfo, version: String(i) };
		await info.setClientInfo(id, value);
		const read = await info.getClientInfo(id);
		if (read.version !== value.version) bad++;
		pairs++;
	});
	const cpuUs = ((mainThreadCpuMs() - cpuBefore) * 1000) / pairs;
	if (bad) fail(`${bad} reads did not return the value just written`);
	return { perSecond, cpuUs };
}

const scenarios = {
	async infoSetGet() {
		const info = newInfo();
		await info.setClientInfo('warm', clientInfo);
		await info.getClientInfo('warm');
		const { perSecond, cpuUs } = await setGetPairs(info);
		done({ value: perSecond, cpuUs, unit: 'pairs/s' });
	},

	async jsonFloor() {
		// The same loop with a Map in place of Redis: what any implementation's set+get
		// costs this thread before a byte is written (the value, JSON both ways, two
		// awaited calls). No client can be faster than this.
		const stored = new Map();
		const info = {
			setClientInfo: async (id, value) => void stored.set(id, JSON.stringify(value)),
			getClientInfo: async (id) => JSON.parse(stored.get(id)),
		};
		done({ value: (await setGetPairs(info)).perSecond, unit: 'pairs/s' });
	},

	async threeGetters() {
		// Data prepared by the orchestrator with a plain client, readable by both.
		const info = newInfo();
		let bad = 0;
		const perSecond = await loops(p.concurrency, p.ms, async (lane) => {
			const id = `g${lane % p.sessions}`;
			const caps = await info.getClientCapabilities(id);
			const ci = await info.getClientInfo(id);
			const level = await info.getLogLevel(id);
			if (!caps || ci.name !== 'bench-client' || level !== 'info') bad++;
		});
		if (bad) fail(`${bad} hydrations returned wrong data`);
		done({ value: perSecond, unit: 'hydrations/s' });
	},

	async receiver() {
		// Holds p.sessions sessions; reports deliveries (and latency when payloads carry a time).
		const streams = newStreams();
		const latencies = [];
		let received = 0;
		let first = 0;
		let last = 0;
		let cpuAtFirst = 0;
		const onChunk = (text) => {
			const now = performance.timeOrigin + performance.now();
			if (!first) {
				first = now;
				cpuAtFirst = mainThreadCpuMs();
			}
			last = now;
			received++;
			progress.received = received;
			if (p.latency) latencies.push((now - Number(text.slice(6, text.indexOf('\n')))) * 1000);
			if (received === p.expect) finish();
		};
		for (let i = 0; i < p.sessions; i++) await streams.create(`${p.prefix}${i}`, counter(onChunk));
		// Upstream's create does not wait for its subscriptions.
		if (impl === 'upstream') await sleep(300);
		function finish() {
			latencies.sort((a, b) => a - b);
			const q = (f) => latencies[Math.min(latencies.length - 1, Math.floor(f * latencies.length))];
			done({
				received,
				seconds: (last - first) / 1000,
				cpuUs: ((mainThreadCpuMs() - cpuAtFirst) * 1000) / received,
				...(p.latency ? { p50: q(0.5), p90: q(0.9), p99: q(0.99) } : {}),
			});
		}
		send({ type: 'ready' });
	},

	async sender() {
		const streams = newStreams();
		await sleep(50);
		const frame = (i) =>
			`data: ${performance.timeOrigin + performance.now()}\n` + `event: message\ndata: ${'y'.repeat(p.payload)}\n\n`;
		const start = performance.now();
		if (p.broadcasts) {
			for (let i = 0; i < p.broadcasts; i++) await streams.send(undefined, frame(i));
		} else if (p.rate) {
			// Steady rate: one message every 1/rate s, each awaited before the next tick.
			const gap = 1000 / p.rate;
			for (let i = 0; i < p.messages; i++) {
				const due = start + i * gap;
				while (performance.now() < due) await sleep(Math.max(0, due - performance.now() - 1));
				await streams.send([`${p.prefix}0`], frame(i));
			}
		} else {
			const cpuBefore = mainThreadCpuMs();
			await inLanes(p.messages, p.concurrency, (i) => streams.send([`${p.prefix}${i % p.sessions}`], frame(i)));
			const cpuUs = ((mainThreadCpuMs() - cpuBefore) * 1000) / p.messages;
			done({ seconds: (performance.now() - start) / 1000, cpuUs }, { stay: true });
			return;
		}
		done({ seconds: (performance.now() - start) / 1000 }, { stay: true });
	},

	async subReceiver() {
		// p.subs local subscriptions, each to its own resource uri (file:///r<i>). The
		// sender publishes resources/updated for uri file:///<p.target><i % p.subs>: "r"
		// matches one subscription per message, anything else matches none. Reports the
		// main thread's CPU per published notification from its first arrival (matching)
		// or from ready until told to report (none matching), and deliveries per second.
		const subs = new RedisSubscriptionManager(p.url);
		let received = 0;
		let first = 0;
		let last = 0;
		let cpuAtStart = 0;
		const callbacks = {
			acknowledge() {},
			send(notification) {
				if (!first) first = performance.now();
				last = performance.now();
				if (typeof notification.params.uri !== 'string') fail('notification without uri');
				received++;
				progress.received = received;
				if (received === p.expect) finish();
			},
			close() {},
		};
		for (let i = 0; i < p.subs; i++) {
			await subs.create({ id: i, origin: 'bench', filters: { resourceSubscriptions: [`file:///r${i}`] } }, callbacks);
		}
		// Upstream's create returns before its subscription is confirmed.
		if (impl === 'upstream') await sleep(300);
		function finish() {
			// Never zero: a ratio against it would be meaningless.
			const cpuMs = Math.max(0.001, mainThreadCpuMs() - cpuAtStart);
			done({ received, seconds: (last - first) / 1000, cpuUs: (cpuMs * 1000) / p.published });
		}
		process.on('message', (m) => m === 'report' && finish());
		cpuAtStart = mainThreadCpuMs();
		send({ type: 'ready' });
	},

	async subSender() {
		const subs = new RedisSubscriptionManager(p.url);
		const note = (i) => ({
			jsonrpc: '2.0',
			method: 'notifications/resources/updated',
			params: { uri: `file:///${p.target}${i % p.subs}`, title: 'y'.repeat(p.payload) },
		});
		const start = performance.now();
		await inLanes(p.messages, p.concurrency, (i) => subs.send(note(i)));
		done({ seconds: (performance.now() - start) / 1000 }, { stay: true });
	},

	async senderFloor() {
		// The sender's own loop with a no-op in place of send(): what building the frames,
		// the lanes and one awaited call per message cost this thread without any client.
		const frame = (i) =>
			`data: ${performance.timeOrigin + performance.now()}\n` + `event: message\ndata: ${'y'.repeat(p.payload)}\n\n`;
		const sink = [];
		const send = async (ids, data) => void (sink[0] = data);
		const cpuBefore = mainThreadCpuMs();
		await inLanes(p.messages, p.concurrency, (i) => send([`${p.prefix}${i % p.sessions}`], frame(i)));
		done({ cpuUs: ((mainThreadCpuMs() - cpuBefore) * 1000) / p.messages });
	},

	async infoDelete() {
		// Each session has two subscriptions, made through this implementation's API.
		const info = newInfo();
		for (let i = 0; i < p.deletes; i++) {
			await info.addSubscription(`del${i}`, `file:///own/${i}`);
			await info.addSubscription(`del${i}`, 'file:///shared');
			await info.setClientInfo(`del${i}`, clientInfo);
		}
		const start = performance.now();
		await inLanes(p.deletes, p.concurrency, (i) => info.delete(`del${i}`));
		const seconds = (performance.now() - start) / 1000;
		const left = await info.getSubscriptions('file:///shared');
		if (left.length) fail(`${left.length} ids left in a subscription set after delete`);
		done({ value: p.deletes / seconds, unit: 'deletes/s' });
	},

	async coldStart() {
		// A fresh process: from the import to the first info reply (a value the
		// orchestrator stored), connecting included.
		const start = performance.now();
		const { RedisInfoSessionManager } = await load();
		const info = new RedisInfoSessionManager(p.url);
		const read = await info.getClientInfo('cold');
		const ms = performance.now() - start;
		if (read?.name !== 'bench-client') fail(`the first info reply was ${JSON.stringify(read)}`);
		done({ ms });
	},

	async heldMemory() {
		// RSS after GC with p.sessions held, minus before them (the manager connected and
		// one session made and deleted first); measured once the orchestrator saw every
		// session's subscription at Redis.
		const streams = newStreams();
		await streams.create('warm', counter(() => {}));
		await streams.delete('warm');
		await sleep(200);
		const before = (await afterGc()).rss;
		for (let i = 0; i < p.sessions; i++) await streams.create(`h${i}`, counter(() => {}));
		send({ type: 'ready' });
		await measure;
		const after = (await afterGc()).rss;
		done({ kbPerSession: (after - before) / 1024 / p.sessions });
	},

	async churn() {
		const streams = newStreams();
		const snapshot = async () => {
			const m = await afterGc();
			return { rss: m.rss, heap: m.heapUsed };
		};
		const cycle = async (i) => {
			await streams.create(`c${i}`, counter(() => {}));
			await streams.delete(`c${i}`);
		};
		for (let i = 0; i < 500; i++) await cycle(-i - 1);
		// A warm run first goes through `warm` more sessions at the measured concurrency,
		// so the batched paths are compiled before the clock starts.
		if (p.warm) await inLanes(p.warm, p.concurrency, (i) => cycle(-501 - i));
		const before = await snapshot();
		const start = performance.now();
		await inLanes(p.sessions, p.concurrency, cycle);
		const seconds = (performance.now() - start) / 1000;
		const after = await snapshot();
		done({
			value: p.sessions / seconds,
			unit: 'sessions/s',
			rssGrowthMb: (after.rss - before.rss) / 1048576,
			heapGrowthMb: (after.heap - before.heap) / 1048576,
		});
	},
};

if (!scenarios[scenario]) fail(`unknown scenario ${scenario}`);
await scenarios[scenario]();
