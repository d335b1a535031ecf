// The main job, end to end: two TMCP server processes share one Redis; an MCP SDK
// client opens its SSE stream on process A and sends every request to process B.
// `--cluster`: on a private Redis Cluster. `--mixed`: a migration under way, process A
// still runs upstream's @tmcp/session-manager-redis and B runs ours with
// `upstreamCompatible: true`.
import { createClient, createCluster } from 'redis';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
	ResourceUpdatedNotificationSchema,
	ToolListChangedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';
import { startCluster } from '../__test__/helpers/cluster.mjs';
import { startRedis } from '../__test__/helpers/redis.mjs';
import { callTool, openListen } from './listen.mjs';
import { startProcess, stopProcesses } from './processes.mjs';
import { RESOURCE_URI } from './server.mjs';

const say = (line) => console.log(line);
const started = [];
// `npm run demo -- --cluster`: the same on a private Redis Cluster (3 masters + 3 replicas).
const onCluster = process.argv.includes('--cluster');
// `npm run demo -- --mixed`: A runs upstream's managers, B ours (as during a migration).
const mixed = process.argv.includes('--mixed');
if (mixed && onCluster) {
	console.error('--mixed runs on one Redis: upstream has no cluster mode');
	process.exit(2);
}
const managerOptions = onCluster ? { cluster: true } : {};
// While an upstream process shares the Redis, ours runs with upstreamCompatible: true, or
// B's broadcasts (tools/list_changed) would not reach the stream upstream holds on A.
const bOptions = mixed ? { upstreamCompatible: true } : managerOptions;
let redisServer;

/**
 * What the demo reads in Redis, from one server or across a cluster: node-redis routes
 * key commands by slot; KEYS asks every master; subscribers of our channels are counted
 * at the channel's owner (sharded on a cluster).
 */
async function observe(url) {
	if (!onCluster) {
		const client = createClient({ url });
		client.on('error', () => {});
		await client.connect();
		return Object.assign(client, {
			keysMatching: (pattern) => client.keys(pattern),
			subscribers: async (channel) => (await client.pubSubNumSub([channel]))[channel],
		});
	}
	const cluster = createCluster({ rootNodes: [{ url }] });
	cluster.on('error', () => {});
	await cluster.connect();
	return Object.assign(cluster, {
		async keysMatching(pattern) {
			const found = [];
			for (const master of cluster.masters) found.push(...(await (await cluster.nodeClient(master)).keys(pattern)));
			return found;
		},
		async subscribers(channel) {
			const reply = await cluster.sendCommand(channel, false, ['PUBSUB', 'SHARDNUMSUB', channel]);
			return Number(reply[1]);
		},
	});
}
let exitCode = 0;

/**
 * Opens a subscriptions/listen stream on A, calls `touch` on B, and returns what the
 * stream received (method and uri), then closes the stream.
 */
async function listenOnAWhileBTouches(aUrl, bUrl) {
	const notifications = { toolsListChanged: true, resourceSubscriptions: [RESOURCE_URI] };
	const stream = await openListen(aUrl, { id: 'listen-1', notifications, clientName: 'demo-listener' });
	const waitFor = async (check, what) => {
		for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
		if (!check()) throw new Error(`${what} did not arrive`);
	};
	await waitFor(() => stream.messages.length >= 1, 'the acknowledgement');
	await callTool(bUrl, 2, 'touch', 'demo-listener');
	await waitFor(() => stream.messages.length >= 3, 'notifications on the listen stream');
	await stream.close();
	return stream.messages.map((m) => `${m.method}${m.params?.uri ? ` ${m.params.uri}` : ''}`);
}

async function stopAll() {
	await stopProcesses(started);
	if (redisServer) await redisServer.stop();
}

try {
	let redisUrl = process.env.REDIS_URL;
	if (onCluster) {
		redisServer = await startCluster();
		redisUrl = redisServer.url;
		say(`• started a private Redis Cluster: 3 masters + 3 replicas (pids ${redisServer.nodes.map((n) => n.pid).join(', ')}), seed ${redisUrl}`);
	} else if (!redisUrl) {
		redisServer = await startRedis();
		redisUrl = redisServer.url;
		say(`• started a private redis-server (pid ${redisServer.pid}) on ${redisUrl}`);
	} else {
		say(`• using REDIS_URL`);
	}
	const redis = await observe(redisUrl);

	const [a, b] = await Promise.all([
		startProcess('A', redisUrl, started, say, managerOptions, { upstream: mixed }),
		startProcess('B', redisUrl, started, say, bOptions),
	]);
	say(`• server process A: pid ${a.pid} at ${a.url}${mixed ? ' (upstream: @tmcp/session-manager-redis)' : ''}`);
	say(`• server process B: pid ${b.pid} at ${b.url}${mixed ? ' (ours, upstreamCompatible: true)' : ''}`);

	const transport = new StreamableHTTPClientTransport(new URL(b.url), {
		fetch: (url, init) => fetch((init?.method ?? 'GET') === 'GET' ? a.url : b.url, init),
	});
	const client = new Client({ name: 'demo-client', version: '1.0.0' }, { capabilities: {} });
	const notifications = [];
	let notified;
	const allNotified = new Promise((r) => (notified = r));
	const onNotification = (text) => {
		notifications.push(text);
		say(`   ← client received on the SSE stream (held by A): ${text}`);
		if (notifications.length === 2) notified();
	};
	client.setNotificationHandler(ToolListChangedNotificationSchema, (n) => onNotification(n.method));
	client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => onNotification(`${n.method} ${n.params.uri}`));

	say('\n1. initialize → B; the client then opens its SSE stream (GET) → A');
	await client.connect(transport);
	const id = transport.sessionId;
	for (let i = 0; i < 100 && !(await redis.exists(`available:session:${id}`)); i++) await new Promise((r) => setTimeout(r, 20));
	// Upstream's create resolves before its subscription exists: wait for it as well.
	for (let i = 0; i < 100 && !(await redis.subscribers(`session:${id}`)); i++) await new Promise((r) => setTimeout(r, 20));
	say(`   session ${id}`);
	say(`   Redis: tmcp:client_info:${id} = ${await redis.get(`tmcp:client_info:${id}`)}`);
	say(`   Redis: available:session:${id} = ${await redis.get(`available:session:${id}`)} (A holds the stream)`);
	say(`   Redis: ${onCluster ? 'PUBSUB SHARDNUMSUB' : 'PUBSUB NUMSUB'} session:${id} = ${await redis.subscribers(`session:${id}`)}${onCluster ? ' at the master of its slot (a sharded channel)' : ''}`);

	say('\n2. tools/call whoami → B (B has no memory of the session: it hydrates it from Redis)');
	const who = JSON.parse((await client.callTool({ name: 'whoami', arguments: {} })).content[0].text);
	say(`   answered by process ${who.process} (pid ${who.pid}); it read clientInfo ${JSON.stringify(who.clientInfo)}`);
	if (who.process !== 'B' || who.clientInfo?.name !== 'demo-client') throw new Error('B did not hydrate the client info');

	say(`\n3. resources/subscribe ${RESOURCE_URI} → B`);
	await client.subscribeResource({ uri: RESOURCE_URI });
	// The transport stores the subscription without awaiting it; give the write a moment.
	for (let i = 0; i < 100 && !(await redis.sIsMember(`tmcp:subscriptions:${RESOURCE_URI}`, id)); i++) {
		await new Promise((r) => setTimeout(r, 20));
	}
	say(`   Redis: tmcp:subscriptions:${RESOURCE_URI} = ${JSON.stringify(await redis.sMembers(`tmcp:subscriptions:${RESOURCE_URI}`))}`);

	say('\n4. tools/call touch → B; B publishes the notifications, A enqueues them into the stream');
	await client.callTool({ name: 'touch', arguments: {} });
	await Promise.race([
		allNotified,
		new Promise((_, reject) => setTimeout(() => reject(new Error('notifications did not arrive through A')), 10_000)),
	]);

	say('\n5. DELETE session → B; A closes the stream, every key of the session is gone');
	await transport.terminateSession();
	await client.close();
	for (let i = 0; i < 100 && (await redis.exists(`available:session:${id}`)); i++) await new Promise((r) => setTimeout(r, 20));
	const left = await redis.keysMatching(`*${id}*`);
	say(`   Redis keys left for the session: ${JSON.stringify(left)}`);
	if (left.length) throw new Error('session keys left behind');

	say('\n6. subscriptions/listen (MCP 2026-07-28, no session) → A; tools/call touch → B');
	const got = await listenOnAWhileBTouches(a.url, b.url);
	for (const line of got) say(`   ← listen stream (held by A): ${line}`);
	if (!got.some((l) => l.startsWith('notifications/tools/list_changed'))) throw new Error('listen stream got no list_changed');
	const numsub = onCluster ? 'PUBSUB SHARDNUMSUB' : 'PUBSUB NUMSUB';
	const whoListens = mixed
		? "only A: upstream's manager subscribes when it is built, ours once it holds a listen stream"
		: 'only A: a process subscribes once it holds a listen stream';
	say(`   Redis: ${numsub} tmcp:subscriptions = ${await redis.subscribers('tmcp:subscriptions')} (${whoListens})`);
	await redis.quit();

	say('\n7. each process\'s stats() (README "Observability": what a metrics scrape reads)');
	for (const p of [a, b]) {
		const all = await (await fetch(p.allStats)).json();
		for (const [manager, figures] of Object.entries(all)) {
			const shown = figures ? Object.entries(figures).map(([name, value]) => `${name}=${value}`).join(' ') : '(upstream: no stats())';
			say(`   ${p.name} ${manager}: ${shown}`);
		}
	}
	say(
		mixed
			? '\n✓ demo complete (mixed): stream on A (upstream), requests on B (ours, upstreamCompatible), notifications from B delivered through A'
			: '\n✓ demo complete: stream on A, requests on B, notifications from B delivered through A',
	);
} catch (error) {
	console.error(`\n✗ demo failed: ${error?.stack ?? error}`);
	exitCode = 1;
} finally {
	await stopAll();
}
process.exit(exitCode);
