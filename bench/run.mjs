// `npm run bench [-- --quick]`: upstream (@tmcp/session-manager-redis) and ours side by side
// in one run, against one private redis-server: each measurement in its own process,
// A/B order alternating per round, medians of per-round ratios. Every figure is checked
// (messages counted, values read back); a failed check aborts the run.
import { fork, execFileSync } from 'node:child_process';
import { writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { createClient } from 'redis';
import { startCluster } from '../__test__/helpers/cluster.mjs';
import { startRedis } from '../__test__/helpers/redis.mjs';

const quick = process.argv.includes('--quick');
// `--only <text>`: just the scenarios whose name contains <text> (several: `a|b`), with no
// ceiling, floors or cluster rows, for A/B work on one path.
const onlyAt = process.argv.indexOf('--only');
const only = onlyAt > 0 ? process.argv[onlyAt + 1].split('|') : undefined;
const ROUNDS = quick ? 3 : 5;
const MS = quick ? 800 : 2000;
const worker = fileURLToPath(new URL('./worker.mjs', import.meta.url));
const IMPLS = ['upstream', 'ours'];

const server = await startRedis({ args: ['--enable-debug-command', 'yes'] });
const admin = createClient({ url: server.url });
admin.on('error', () => {});
await admin.connect();
const url = server.url;

function spawnWorker(impl, scenario, params, nodeArgs = []) {
	const child = fork(worker, [impl, scenario, JSON.stringify({ url, ...params })], {
		execArgv: nodeArgs,
		stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
	});
	let readyResolve;
	let progressResolve;
	const ready = new Promise((r) => (readyResolve = r));
	const result = new Promise((resolve, reject) => {
		child.on('message', (m) => {
			if (m.type === 'ready') readyResolve();
			if (m.type === 'result') resolve(m.result);
			if (m.type === 'progress') progressResolve?.(m.received);
		});
		child.on('exit', (code) => code && reject(new Error(`${impl} ${scenario} exited with ${code}`)));
	});
	/** What a receiver has now (it stays). */
	const progress = () =>
		new Promise((resolve) => {
			progressResolve = resolve;
			child.send('report');
		});
	return {
		ready,
		result,
		/** Tells a heldMemory worker that its sessions are all subscribed. */
		measure: () => child.send('measure'),
		/**
		 * A receiver's result if it got its count within `ms`, else what it got by then
		 * (`complete: false`); the child is ended either way.
		 */
		async within(ms) {
			let timer;
			const late = new Promise((resolve) => (timer = setTimeout(resolve, ms, 'late')));
			const outcome = await Promise.race([result, late]);
			clearTimeout(timer);
			if (outcome !== 'late') return { ...outcome, complete: true };
			const received = await progress();
			child.kill();
			return { received, complete: false };
		},
		/** Tells a process that stays after its result (a sender) to exit. */
		finish: () => child.connected && child.send('exit'),
		/** Asks a receiver to report what it has now. */
		report: () => child.connected && child.send('report'),
		/** The receiver's result, or a loud abort when it stalls short of its count. */
		async settle(expected, ms = 30_000) {
			let timer;
			const stalled = new Promise((resolve) => (timer = setTimeout(resolve, ms, 'stalled')));
			const outcome = await Promise.race([result, stalled]);
			clearTimeout(timer);
			if (outcome !== 'stalled') return outcome;
			const got = await progress();
			child.kill();
			check(false, `${impl} ${scenario} received ${got} of ${expected} messages (stalled ${ms} ms)`);
		},
	};
}

/** Runs a sender to completion (its result), then lets it exit. */
async function runSender(impl, { scenario = 'sender', ...params }) {
	const sender = spawnWorker(impl, scenario, params);
	const result = await sender.result;
	return { result, finish: sender.finish };
}

const median = (xs) => {
	const s = [...xs].sort((a, b) => a - b);
	return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * Waits (at most `ms`) until `channel` has a subscriber at Redis; whether it has. A
 * process's subscriptions go out in order, so its last session's stands for all of them.
 */
async function subscribed(channel, ms) {
	const end = Date.now() + ms;
	while (Date.now() < end) {
		const [, count] = await admin.sendCommand(['PUBSUB', 'NUMSUB', channel]);
		if (count > 0) return true;
		await new Promise((resolve) => setTimeout(resolve, 50));
	}
	return false;
}

// The cheap-start rows: sessions held for the memory row, and for the delivery row (one
// message to each) with its bound on the wait.
const HELD = quick ? 5_000 : 50_000;
const MANY = quick ? 5_000 : 50_000;
const MANY_WAIT_S = quick ? 20 : 60;

/** Scenario table: `run(impl)` returns { metricName: value }; `better` says which way is good. */
const scenarios = [
	{
		name: 'info set+get, 1 in flight (pairs/s)',
		run: async (impl) => ({ v: (await spawnWorker(impl, 'infoSetGet', { concurrency: 1, ms: MS }).result).value }),
	},
	{
		name: 'info set+get, 64 in flight',
		rows: [
			['(pairs/s)', 'v', 'higher'],
			['main-thread CPU per pair (µs)', 'cpu', 'lower'],
		],
		run: async (impl) => {
			const r = await spawnWorker(impl, 'infoSetGet', { concurrency: 64, ms: MS }).result;
			return { v: r.value, cpu: r.cpuUs };
		},
	},
	{
		name: 'three getters of a POST, 64 in flight (hydrations/s)',
		setup: async () => {
			const m = admin.multi();
			for (let i = 0; i < 64; i++) {
				m.set(`tmcp:client_info:g${i}`, JSON.stringify({ name: 'bench-client', version: '1.0.0' }));
				m.set(`tmcp:client_capabilities:g${i}`, JSON.stringify({ sampling: {}, roots: { listChanged: true } }));
				m.set(`tmcp:log_level:g${i}`, 'info');
			}
			await m.exec();
		},
		run: async (impl) => ({
			v: (await spawnWorker(impl, 'threeGetters', { concurrency: 64, sessions: 64, ms: MS }).result).value,
		}),
	},
	{
		name: 'notify latency, 2 processes, 2,000 msg/s',
		rows: [
			['p50 (µs)', 'p50', 'lower'],
			['p90 (µs)', 'p90', 'lower'],
			['p99 (µs)', 'p99', 'lower'],
		],
		run: async (impl) => {
			const messages = quick ? 2000 : 6000;
			const receiver = spawnWorker(impl, 'receiver', { sessions: 1, prefix: 'lat', expect: messages, latency: true });
			await receiver.ready;
			const sender = await runSender(impl, { prefix: 'lat', rate: 2000, messages, payload: 200 });
			const r = await receiver.settle(messages);
			sender.finish();
			check(r.received === messages, `${impl} latency: received ${r.received}/${messages}`);
			return { p50: r.p50, p90: r.p90, p99: r.p99 };
		},
	},
	{
		name: 'delivery to 100 sessions in another process, 256 sends in flight',
		rows: [
			['(delivered messages/s)', 'v', 'higher'],
			['receiver main-thread CPU per message (µs)', 'rcpu', 'lower'],
			['sender main-thread CPU per send (µs)', 'scpu', 'lower'],
		],
		run: async (impl) => {
			const messages = quick ? 30_000 : 100_000;
			const receiver = spawnWorker(impl, 'receiver', { sessions: 100, prefix: 'd', expect: messages });
			await receiver.ready;
			const sender = await runSender(impl, { prefix: 'd', sessions: 100, messages, concurrency: 256, payload: 300 });
			const r = await receiver.settle(messages);
			sender.finish();
			check(r.received === messages, `${impl} delivery: received ${r.received}/${messages}`);
			return { v: r.received / r.seconds, rcpu: r.cpuUs, scpu: sender.result.cpuUs };
		},
	},
	...[
		['no matching subscription (1,000 local ones for other resources)', 'x'],
		['1,000 local subscriptions, each message matching one', 'r'],
	].map(([label, target]) => ({
		name: `subscriptions/listen notifications, ${label}`,
		rows:
			target === 'r'
				? [
						['(delivered notifications/s)', 'v', 'higher'],
						['receiver main-thread CPU per notification (µs)', 'cpu', 'lower'],
					]
				: [['receiver main-thread CPU per notification (µs)', 'cpu', 'lower']],
		run: async (impl) => {
			const messages = quick ? 20_000 : 60_000;
			const matching = target === 'r';
			const params = { subs: 1000, target, published: messages, expect: matching ? messages : -1 };
			const receiver = spawnWorker(impl, 'subReceiver', params);
			await receiver.ready;
			const sender = await runSender(impl, { scenario: 'subSender', subs: 1000, target, messages, concurrency: 64, payload: 100 });
			let r;
			if (matching) {
				r = await receiver.settle(messages);
				check(r.received === messages, `${impl} subscriptions: received ${r.received}/${messages}`);
			} else {
				// Nothing arrives to count: give the receiver time to read what was sent.
				await new Promise((resolve) => setTimeout(resolve, 500));
				receiver.report();
				r = await receiver.result;
				check(r.received === 0, `${impl} subscriptions: ${r.received} unexpected deliveries`);
			}
			sender.finish();
			return { v: matching ? r.received / r.seconds : 0, cpu: r.cpuUs };
		},
	})),
	{
		// Ours against ours: what a node:diagnostics_channel subscriber (on every channel of
		// ours, as an APM attaches one) costs the main thread of a sender (one trace per
		// send) and of a receiver (nothing per message: deliveries are not traced).
		name: 'observability: delivery to 100 sessions in another process, 256 sends in flight, no subscriber vs a subscriber on every tmcp-redis channel',
		impls: ['ours', 'ours-observed'],
		rows: [
			['(delivered messages/s)', 'v', 'higher'],
			['receiver main-thread CPU per message (µs)', 'rcpu', 'lower'],
			['sender main-thread CPU per send (µs)', 'scpu', 'lower'],
		],
		run: async (impl) => {
			const observe = impl === 'ours-observed';
			const messages = quick ? 30_000 : 100_000;
			const receiver = spawnWorker('ours', 'receiver', { sessions: 100, prefix: 'o', expect: messages, observe });
			await receiver.ready;
			const sender = await runSender('ours', { prefix: 'o', sessions: 100, messages, concurrency: 256, payload: 300, observe });
			const r = await receiver.settle(messages);
			sender.finish();
			check(r.received === messages, `${impl} observability: received ${r.received}/${messages}`);
			return { v: r.received / r.seconds, rcpu: r.cpuUs, scpu: sender.result.cpuUs };
		},
	},
	...[0, 200_000].map((unrelated) => ({
		name: `broadcast to 1,000 sessions in 2 processes, ${unrelated.toLocaleString('en')} unrelated keys (broadcasts/s)`,
		setup: async () => {
			if (unrelated) await admin.sendCommand(['DEBUG', 'POPULATE', String(unrelated), 'unrelated']);
		},
		run: async (impl) => {
			const broadcasts = impl === 'ours' ? (quick ? 100 : 300) : unrelated ? 2 : quick ? 10 : 30;
			const receivers = [0, 1].map((n) =>
				spawnWorker(impl, 'receiver', { sessions: 500, prefix: `b${n}_`, expect: 500 * broadcasts }),
			);
			await Promise.all(receivers.map((r) => r.ready));
			const started = Date.now();
			const sender = await runSender(impl, { broadcasts, payload: 200 });
			const results = await Promise.all(receivers.map((r) => r.settle(500 * broadcasts)));
			sender.finish();
			for (const r of results) check(r.received === 500 * broadcasts, `${impl} broadcast: ${r.received}`);
			return { v: broadcasts / ((Date.now() - started) / 1000) };
		},
	})),
	{
		name: 'info delete, 10,000 unrelated subscription sets (deletes/s)',
		setup: async () => {
			const m = admin.multi();
			for (let i = 0; i < 10_000; i++) m.sAdd(`tmcp:subscriptions:file:///unrelated/${i}`, `other${i}`);
			await m.exec();
		},
		run: async (impl) => {
			const deletes = impl === 'ours' ? (quick ? 1000 : 3000) : quick ? 3 : 6;
			const r = await spawnWorker(impl, 'infoDelete', { deletes, concurrency: impl === 'ours' ? 64 : 1 }).result;
			check((await admin.exists('tmcp:subscriptions:file:///unrelated/9999')) === 1, 'unrelated sets intact');
			return { v: r.value };
		},
	},
	{
		// From the import to the first reply, connecting included: what a serverless
		// function pays per cold start. Each time a fresh process; the median of several.
		name: 'cold start: from import to the first info reply, a fresh process each time (ms)',
		rows: [['', 'v', 'lower']],
		setup: () => admin.set('tmcp:client_info:cold', JSON.stringify({ name: 'bench-client', version: '1.0.0' })),
		run: async (impl) => {
			const times = [];
			for (let i = 0; i < (quick ? 3 : 5); i++) times.push((await spawnWorker(impl, 'coldStart', {}).result).ms);
			return { v: median(times) };
		},
	},
	{
		name: `memory per held session, ${HELD.toLocaleString('en')} sessions in a fresh process, RSS after GC (KB)`,
		rows: [['', 'v', 'lower']],
		run: async (impl) => {
			const worker = spawnWorker(impl, 'heldMemory', { sessions: HELD }, ['--expose-gc']);
			await worker.ready;
			check(await subscribed(`session:h${HELD - 1}`, 60_000), `${impl} held memory: the sessions were not subscribed within 60 s`);
			worker.measure();
			return { v: (await worker.result).kbPerSession };
		},
	},
	// One round each (upstream's may wait its whole bound). The messages go out as soon as
	// the receiver's create() calls resolved (upstream's receiver waits 300 ms more, as in
	// every row: its create() does not wait for its subscriptions), or once the receiver's
	// subscriptions are all at Redis (or after the same bound).
	...['as soon as create() resolved', 'once every subscription is at Redis'].map((when, i) => ({
		name: `one message to each of ${MANY.toLocaleString('en')} sessions held in one process, sent from another ${when}`,
		rounds: 1,
		rows: [
			[`delivered within ${MANY_WAIT_S} s`, 'delivered', 'higher'],
			['seconds from the first delivery to the last', 'seconds', 'lower', `not all within ${MANY_WAIT_S} s`],
		],
		run: async (impl) => {
			const receiver = spawnWorker(impl, 'receiver', { sessions: MANY, prefix: 'm', expect: MANY });
			await receiver.ready;
			if (i === 1 && !(await subscribed(`session:m${MANY - 1}`, MANY_WAIT_S * 1000))) {
				notes.push(`${impl}: the ${MANY.toLocaleString('en')} sessions were not all subscribed within ${MANY_WAIT_S} s; sent anyway`);
			}
			const sender = await runSender(impl, { prefix: 'm', sessions: MANY, messages: MANY, concurrency: 256, payload: 200 });
			const r = await receiver.within(MANY_WAIT_S * 1000);
			sender.finish();
			check(impl !== 'ours' || r.complete, `ours ${MANY} sessions: received ${r.received}/${MANY}`);
			return { delivered: r.received, seconds: r.complete ? r.seconds : null };
		},
	})),
	// Cold: the clock starts after 500 sessions made one at a time, so the batched paths
	// are still being compiled. Warm: after 2,000 more at the measured concurrency, as a
	// long-running server would be. Upstream's memory grows with every session: the 2,000
	// more cost it about 5 % here (41.6–43.0 k against 43.5–45.5 k sessions/s), within
	// run-to-run noise.
	...[0, 2_000].map((warm) => ({
		name: `create+delete churn, 20,000 sessions, ${warm ? 'warm' : 'cold'}`,
		rows: [
			['sessions/s', 'v', 'higher'],
			['RSS growth after GC (MB)', 'rss', 'lower-abs'],
			['heap growth after GC (MB)', 'heap', 'lower-abs'],
		],
		run: async (impl) => {
			const params = { sessions: 20_000, concurrency: 64, warm };
			const r = await spawnWorker(impl, 'churn', params, ['--expose-gc']).result;
			return { v: r.value, rss: r.rssGrowthMb, heap: r.heapGrowthMb, unhandled: r.unhandled };
		},
	})),
];

function check(ok, message) {
	if (!ok) {
		console.error(`bench check failed: ${message}`);
		process.exit(2);
	}
}

const fmt = (x) =>
	Math.abs(x) >= 100 ? Math.round(x).toLocaleString('en') : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2);

const table = [];
// Scenarios of ours against ours (`impls`): a table of their own.
const oursTable = [];
const notes = [];
for (const scenario of scenarios.filter((s) => !only || only.some((o) => s.name.includes(o)))) {
	const rows = scenario.rows ?? [['', 'v', 'higher']];
	const impls = scenario.impls ?? IMPLS;
	const perRound = rows.map(() => ({ upstream: [], ours: [], ratio: [] }));
	for (let round = 0; round < (scenario.rounds ?? ROUNDS); round++) {
		await admin.flushAll();
		await scenario.setup?.();
		const order = round % 2 ? [...impls].reverse() : impls;
		const got = {};
		for (const impl of order) got[impl] = await scenario.run(impl);
		rows.forEach(([, key, better], i) => {
			// "upstream" and "ours" stand for the scenario's first and second impl.
			const up = got[impls[0]][key];
			const ours = got[impls[1]][key];
			perRound[i].upstream.push(up);
			perRound[i].ours.push(ours);
			// null: not reached (a bounded wait ran out), no ratio.
			if (up == null || ours == null) return;
			if (better === 'higher') perRound[i].ratio.push(ours / up);
			else if (better === 'lower') perRound[i].ratio.push(up / ours);
		});
		if (got.upstream?.unhandled) notes.push(`${scenario.name}: upstream process saw ${got.upstream.unhandled} unhandled rejections (round ${round + 1})`);
		process.stderr.write('.');
	}
	rows.forEach(([label, , better, missing], i) => {
		const r = perRound[i];
		// A value any round did not reach is shown as `missing`.
		const shown = (xs) => (xs.some((x) => x == null) ? missing : fmt(median(xs)));
		(scenario.impls ? oursTable : table).push([
			label ? `${scenario.name} ${label}` : scenario.name,
			shown(r.upstream),
			shown(r.ours),
			better === 'lower-abs' || r.ratio.length === 0 ? '–' : `${median(r.ratio).toFixed(2)}×`,
		]);
	});
}
process.stderr.write('\n');
/** Ours without and with a diagnostics subscriber (see the observability scenario). */
const oursLines = oursTable.length
	? [
			'',
			'Ours without and with a node:diagnostics_channel subscriber:',
			'',
			'| scenario | no subscriber | subscriber | ratio (> 1 = subscriber better) |',
			'|---|---|---|---|',
			...oursTable.map((r) => `| ${r.join(' | ')} |`),
		]
	: [];
if (only) {
	const lines = table.length ? ['| scenario | upstream | ours | ratio |', '|---|---|---|---|', ...table.map((r) => `| ${r.join(' | ')} |`)] : [];
	console.log([...lines, ...oursLines, ...notes.map((n) => `- ${n}`)].join('\n'));
	await admin.quit();
	await server.stop();
	process.exit(0);
}

// The ceiling: redis-benchmark on the same server.
await admin.flushAll();
const csv = execFileSync('redis-benchmark', ['-p', String(server.port), '-c', '64', '-P', '16', '-n', quick ? '400000' : '1000000', '-t', 'set,get', '--csv', '-q'])
	.toString()
	.trim()
	.split('\n');
const publishCsv = execFileSync('redis-benchmark', ['-p', String(server.port), '-c', '64', '-P', '16', '-n', quick ? '400000' : '1000000', '--csv', '-q', 'PUBLISH', 'bench', 'payload'])
	.toString()
	.trim()
	.split('\n');
const ceiling = {};
for (const line of [...csv, ...publishCsv]) {
	const cols = line.split(',').map((c) => c.replace(/"/g, ''));
	if (cols[0] && !Number.isNaN(Number(cols[1]))) ceiling[cols[0].split(' ')[0]] = Number(cols[1]);
}
const setGet = (ceiling.SET + ceiling.GET) / 2;
const share = (commands) => `${fmt(commands)} = ${((commands / setGet) * 100).toFixed(0)}%`;
const ours64 = Number(table.find((r) => r[0] === 'info set+get, 64 in flight (pairs/s)')[2].replace(/,/g, '')) * 2;
// The floor: set+get's loop with a Map in place of Redis, in a process of its own.
const floors = [];
for (let round = 0; round < ROUNDS; round++) {
	floors.push((await spawnWorker('none', 'jsonFloor', { concurrency: 64, ms: MS }).result).value);
}
const floor64 = median(floors) * 2;
// The sender's floor: its loop with a no-op in place of send() (frames, lanes, awaits).
const senderFloors = [];
for (let round = 0; round < ROUNDS; round++) {
	const params = { prefix: 'd', sessions: 100, messages: quick ? 30_000 : 100_000, concurrency: 256, payload: 300 };
	senderFloors.push((await spawnWorker('none', 'senderFloor', params).result).cpuUs);
}
table.push(['redis-benchmark -c 64 -P 16 ceiling: SET / GET / PUBLISH (commands/s)', '', `${fmt(ceiling.SET)} / ${fmt(ceiling.GET)} / ${fmt(ceiling.PUBLISH)}`, '']);
table.push(['ours info set+get at 64 as a share of the SET/GET ceiling (commands/s)', '', share(ours64), '']);
table.push(['no client: set+get\'s loop with a Map for Redis (JSON and promises only), 64 in flight, as a share of the ceiling (commands/s)', '', share(floor64), '']);
table.push(['no client: the delivery sender\'s loop with a no-op send, main-thread CPU per send (µs)', '', fmt(median(senderFloors)), '']);

// Redis Cluster (ours only: upstream has no cluster mode): the same set+get and delivery
// runs on a private 3-master + 3-replica cluster, beside ours on the standalone server,
// one after the other in each round.
const cluster = await startCluster();
const clustered = { pairs: [], delivered: [] };
const standalone = { pairs: [], delivered: [] };
const delivery = async (target) => {
	const messages = quick ? 30_000 : 100_000;
	const receiver = spawnWorker('ours', 'receiver', { ...target, sessions: 100, prefix: 'cd', expect: messages });
	await receiver.ready;
	const sender = await runSender('ours', { ...target, prefix: 'cd', sessions: 100, messages, concurrency: 256, payload: 300 });
	const r = await receiver.settle(messages);
	sender.finish();
	check(r.received === messages, `ours cluster delivery: received ${r.received}/${messages}`);
	return r.received / r.seconds;
};
for (let round = 0; round < ROUNDS; round++) {
	const targets = [
		[standalone, { url }],
		[clustered, { url: cluster.url, options: { cluster: true } }],
	];
	for (const [into, target] of round % 2 ? [...targets].reverse() : targets) {
		into.pairs.push((await spawnWorker('ours', 'infoSetGet', { ...target, concurrency: 64, ms: MS }).result).value);
		into.delivered.push(await delivery(target));
	}
	process.stderr.write('.');
}
process.stderr.write('\n');
await cluster.stop();
const clusterTable = [
	['info set+get, 64 in flight (pairs/s)', 'pairs'],
	['delivery to 100 sessions in another process, 256 sends in flight (delivered messages/s)', 'delivered'],
].map(([label, key]) => {
	const ratios = standalone[key].map((v, i) => clustered[key][i] / v);
	return [label, fmt(median(standalone[key])), fmt(median(clustered[key])), `${median(ratios).toFixed(2)}×`];
});

const redisVersion = (await admin.info('server')).match(/redis_version:(\S+)/)[1];
const machine = `${os.cpus().length} cores (${os.cpus()[0].model.trim()}), Node ${process.version}, Redis ${redisVersion}, ${quick ? 'quick' : 'full'} mode, ${ROUNDS} rounds, ${new Date().toISOString().slice(0, 10)}`;
const lines = [
	`Machine: ${machine}`,
	'',
	'| scenario | upstream | ours | ratio (> 1 = ours better) |',
	'|---|---|---|---|',
	...table.map((r) => `| ${r.join(' | ')} |`),
];
lines.push(
	'',
	'Ours on a Redis Cluster (3 masters + 3 replicas, all on this machine) beside ours on one Redis:',
	'',
	'| scenario | ours, one Redis | ours, cluster | cluster ÷ one Redis |',
	'|---|---|---|---|',
	...clusterTable.map((r) => `| ${r.join(' | ')} |`),
);
lines.push(...oursLines);
if (notes.length) lines.push('', ...notes.map((n) => `- ${n}`));
const output = lines.join('\n');
console.log(output);
mkdirSync(fileURLToPath(new URL('../bench-results', import.meta.url)), { recursive: true });
writeFileSync(fileURLToPath(new URL(`../bench-results/${quick ? 'quick' : 'full'}.md`, import.meta.url)), output + '\n');
await admin.quit();
await server.stop();
