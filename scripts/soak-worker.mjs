// One process of the soak (scripts/soak.mjs): a holder of stream sessions, the sender,
// or the info worker, driven by the parent over IPC. Everything it counts goes back in
// one report when the parent asks.
// Usage (by soak.mjs only): node soak-worker.mjs <role> <name> <url> <options JSON> <extra JSON>
import dc from 'node:diagnostics_channel';
import v8 from 'node:v8';
import { RedisInfoSessionManager, RedisStreamSessionManager } from '../index.mjs';

const [role, name, url, optionsJson, extraJson] = process.argv.slice(2);
const extra = JSON.parse(extraJson);
/** `timeline`: [when, text] of the last reports and events (see `remember`). */
const counts = { unhandled: 0, uncaught: 0, onError: 0, errorsByText: {}, timeline: [] };
/** The last reports and connection events, kept for the slow-recovery lines. */
const TIMELINE_ENTRIES = 2000;
function remember(text) {
	if (counts.timeline.length >= TIMELINE_ENTRIES) counts.timeline.shift();
	counts.timeline.push([Date.now(), String(text).slice(0, 140)]);
}
process.on('unhandledRejection', (e) => {
	counts.unhandled++;
	note(`unhandledRejection: ${e?.message ?? e}`);
});
process.on('uncaughtException', (e) => {
	counts.uncaught++;
	note(`uncaughtException: ${e?.message ?? e}`);
});
function note(text) {
	const key = String(text).replace(/\d+/g, 'N').slice(0, 160);
	counts.errorsByText[key] = (counts.errorsByText[key] ?? 0) + 1;
	remember(text);
}
// Connections lost and ready, topology changes followed: onto the timeline too.
for (const channel of ['tmcp-redis:connection', 'tmcp-redis:topology']) {
	dc.subscribe(channel, (m) => remember(`${m.role} ${m.event} ${m.serverAddress ?? ''}:${m.serverPort ?? ''}`));
}
const options = {
	...JSON.parse(optionsJson),
	onError: (e) => {
		counts.onError++;
		note(e.message);
	},
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let running = true;
let rssBase = 0;
let heapBase = 0;
let youngBase = 0;
/** Memory after a full GC (the soak forks workers with --expose-gc). */
function settledMemory() {
	const before = process.memoryUsage().rss;
	globalThis.gc?.();
	globalThis.gc?.();
	const { rss, heapUsed } = process.memoryUsage();
	const young = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
	return { before, rss, heapUsed, young };
}
let rssBaseBeforeGc = 0;
/** RSS after the baseline, every 30 s. */
const rssSeries = [];

/** A holder: `extra.sessions` stream sessions, counting every message each receives. */
async function hold() {
	const streams = new RedisStreamSessionManager(url, options);
	const decoder = new TextDecoder();
	/** Times each targeted message (by seq) was received: preallocated and written once (a fresh
	 * array's pages count in RSS only once touched), so the soak's own
	 * bookkeeping does not show as RSS growth. */
	const got = new Uint8Array(extra.capacity).fill(0);
	/** broadcast number → times received, per session */
	const broadcasts = new Map();
	let ended = 0;
	let received = 0;
	let dropped = 0;
	const ids = Array.from({ length: extra.sessions }, (_, i) => `${name}-s${i}`);
	for (const id of ids) {
		const perSession = new Map();
		broadcasts.set(id, perSession);
		let closed = false;
		await untilDone(() =>
			streams.create(id, {
				enqueue(chunk) {
					const text = decoder.decode(chunk);
					received++;
					if (text.startsWith('s:')) {
						// The self-test of the soak: a build that loses 1 message in N.
						if (extra.dropOneIn && received % extra.dropOneIn === 0) {
							dropped++;
							return;
						}
						const seq = Number(text.slice(2));
						if (seq < got.length && got[seq] < 255) got[seq]++;
					} else if (text.startsWith('b:')) {
						const n = Number(text.slice(2));
						perSession.set(n, (perSession.get(n) ?? 0) + 1);
					}
				},
				close() {
					if (!closed && running) ended++;
					closed = true;
				},
				error() {},
			}),
		);
	}
	return {
		stop: () => streams.close(),
		report: () => ({
			ended,
			received,
			dropped,
			got: [...got.entries()].filter(([, n]) => n > 0),
			broadcasts: [...broadcasts.entries()].map(([id, m]) => [id, [...m.entries()]]),
		}),
	};
}

/** Retries a call until it resolves (creation while a fault lasts). */
async function untilDone(call) {
	for (;;) {
		try {
			return await call();
		} catch {
			await sleep(200);
		}
	}
}

/** The sender: targeted sends at `extra.rate`/s to random sessions, a broadcast every 2 s. */
async function send() {
	const streams = new RedisStreamSessionManager(url, options);
	const targets = extra.targets;
	let seq = 0;
	let broadcast = 0;
	// Per seq: the target's index, and when the send resolved (0: pending, -1: rejected).
	// Preallocated and written once (untouched pages are not in RSS yet): the soak's own
	// bookkeeping must not show as RSS growth.
	const targetOf = new Int32Array(extra.capacity).fill(0);
	const resolvedAt = new Float64Array(extra.capacity).fill(0);
	const broadcastsSent = [];
	let random = extra.seed >>> 0 || 1;
	const next = () => {
		random ^= random << 13;
		random ^= random >>> 17;
		random ^= random << 5;
		return (random >>> 0) / 4294967296;
	};
	const perTick = Math.max(1, Math.round(extra.rate / 100));
	let lastBroadcast = Date.now();
	const loop = (async () => {
		while (running && seq + perTick < extra.capacity) {
			const tick = [];
			for (let i = 0; i < perTick; i++) {
				const s = seq++;
				const target = Math.floor(next() * targets.length);
				targetOf[s] = target;
				tick.push(
					streams.send([targets[target]], `s:${s}`).then(
						() => (resolvedAt[s] = Date.now()),
						() => (resolvedAt[s] = -1),
					),
				);
			}
			if (Date.now() - lastBroadcast >= 2000) {
				lastBroadcast = Date.now();
				const b = broadcast++;
				broadcastsSent[b] = -2;
				tick.push(
					streams.send(undefined, `b:${b}`).then(
						() => (broadcastsSent[b] = Date.now()),
						() => (broadcastsSent[b] = -1),
					),
				);
			}
			await Promise.all([Promise.all(tick), sleep(10)]);
		}
	})();
	return {
		stop: async () => {
			await loop;
			await streams.close();
		},
		report: () => ({ sent: Array.from({ length: seq }, (_, s) => [targetOf[s], resolvedAt[s] || -2]), broadcastsSent }),
	};
}

/** The info worker: `extra.rate` set+get pairs/s, each read checked against its write. */
async function info() {
	const manager = new RedisInfoSessionManager(url, options);
	let pairs = 0;
	let failed = 0;
	/** When each stale read's write resolved (a write the old master acknowledged and a
	 * failover lost): the parent keeps those inside fault windows apart. */
	const stale = [];
	const perTick = Math.max(1, Math.round(extra.rate / 100));
	let n = 0;
	const loop = (async () => {
		while (running) {
			const tick = [];
			for (let i = 0; i < perTick; i++) {
				const id = `${name}-i${n % 500}`;
				const value = { name: 'soak', version: String(n++) };
				tick.push(
					(async () => {
						try {
							await manager.setClientInfo(id, value);
							const written = Date.now();
							const read = await manager.getClientInfo(id);
							pairs++;
							// Another pair for the same id may have written since: only older is wrong.
							if (Number(read.version) < Number(value.version)) stale.push(written);
						} catch {
							failed++;
						}
					})(),
				);
			}
			await Promise.all([Promise.all(tick), sleep(10)]);
		}
	})();
	return {
		stop: async () => {
			await loop;
			await manager.close();
		},
		report: () => ({ pairs, failed, stale }),
	};
}

const roles = { hold, send, info };
const worker = await roles[role]();
process.send({ ready: true });
process.on('message', async (msg) => {
	if (msg.cmd === 'settle') {
		settledMemory();
		process.send({ settled: true });
	} else if (msg.cmd === 'baseline') {
		({ before: rssBaseBeforeGc, rss: rssBase, heapUsed: heapBase, young: youngBase } = settledMemory());
		// RSS every 30 s from here (no GC): a leak climbs, a high-water mark levels off.
		rssSeries.push(rssBase);
		setInterval(() => rssSeries.push(process.memoryUsage().rss), 30_000).unref();
		process.send({ baseline: true });
	} else if (msg.cmd === 'stop') {
		running = false;
		const end = settledMemory();
		await worker.stop().catch((e) => note(`close: ${e.message}`));
		const report = {
			role,
			name,
			...worker.report(),
			...counts,
			rssGrowth: rssBase ? end.rss - rssBase : 0,
			rssGrowthBeforeGc: rssBase ? end.before - rssBaseBeforeGc : 0,
			heapGrowth: rssBase ? end.heapUsed - heapBase : 0,
			youngGrowth: rssBase ? end.young - youngBase : 0,
			rssSeries,
		};
		// Disconnected once the (large) report is written, so the process can exit.
		process.send({ report }, () => process.disconnect());
	}
});
