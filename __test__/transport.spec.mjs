// The real stack: tmcp McpServer + HttpTransport with our managers, driven by the
// official MCP TypeScript SDK client; the SSE stream lives on one server and every
// other request goes to another, both sharing one Redis.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
	ResourceUpdatedNotificationSchema,
	ToolListChangedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';
import { callTool, openListen } from '../demo/listen.mjs';
import { startProcess, stopProcesses } from '../demo/processes.mjs';
import { startServer, RESOURCE_URI } from '../demo/server.mjs';
import { eventually, observer, testRedis } from './helpers/redis.mjs';

let redisServer;
let redis;
let a;
let b;
const log = [];

beforeAll(async () => {
	redisServer = await testRedis();
	redis = await observer(redisServer.url);
	a = await startServer({ name: 'A', redisUrl: redisServer.url, log: (l) => log.push(l) });
	b = await startServer({ name: 'B', redisUrl: redisServer.url, log: (l) => log.push(l) });
});

afterAll(async () => {
	await a?.close();
	await b?.close();
	await redis?.quit();
	await redisServer?.stop();
});

describe('HttpTransport with our managers and the MCP SDK client', () => {
	it('delivers server notifications to the SSE stream held by another server', async () => {
		/** @type {string[]} */
		const routed = [];
		const transport = new StreamableHTTPClientTransport(new URL(b.url), {
			// The stream (GET) goes to A, every other request to B.
			fetch: (url, init) => {
				const method = init?.method ?? 'GET';
				const target = method === 'GET' ? a.url : b.url;
				routed.push(`${method}→${target === a.url ? 'A' : 'B'}`);
				return fetch(target, init);
			},
		});
		const client = new Client({ name: 'vitest-client', version: '0.0.1' }, { capabilities: {} });
		const notifications = [];
		client.setNotificationHandler(ToolListChangedNotificationSchema, (n) => notifications.push(n.method));
		client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) =>
			notifications.push(`${n.method} ${n.params.uri}`),
		);
		await client.connect(transport);
		const sessionId = transport.sessionId;
		expect(sessionId).toBeTruthy();
		await eventually(async () => (await redis.exists(`available:session:${sessionId}`)) === 1, 5000, 'stream on A');
		expect(routed).toContain('GET→A');

		const who = await client.callTool({ name: 'whoami', arguments: {} });
		const answer = JSON.parse(who.content[0].text);
		expect(answer.process).toBe('B');
		expect(answer.clientInfo).toEqual({ name: 'vitest-client', version: '0.0.1' });
		expect(JSON.parse(await redis.get(`tmcp:client_info:${sessionId}`))).toEqual(answer.clientInfo);

		await client.subscribeResource({ uri: RESOURCE_URI });
		// The transport calls addSubscription without awaiting it: the answer may come first.
		await eventually(
			async () => (await redis.sMembers(`tmcp:subscriptions:${RESOURCE_URI}`)).includes(sessionId),
			5000,
			'subscription stored',
		);
		expect(await redis.sMembers(`tmcp:subscriptions:${RESOURCE_URI}`)).toEqual([sessionId]);
		await client.callTool({ name: 'touch', arguments: {} });
		await eventually(() => notifications.length >= 2, 5000, 'notifications through A');
		expect(notifications.sort()).toEqual([
			'notifications/resources/updated demo://counter',
			'notifications/tools/list_changed',
		]);
		expect(routed.filter((r) => r.startsWith('GET')).every((r) => r === 'GET→A')).toBe(true);
		expect(routed.filter((r) => !r.startsWith('GET')).every((r) => r.endsWith('→B'))).toBe(true);

		await transport.terminateSession();
		await client.close();
		await eventually(async () => (await redis.exists(`available:session:${sessionId}`)) === 0, 5000, 'session ended');
		expect(await redis.exists(`tmcp:client_info:${sessionId}`)).toBe(0);
		expect(await redis.sMembers(`tmcp:subscriptions:${RESOURCE_URI}`)).toEqual([]);
		expect(log.filter((line) => line.includes('session manager:'))).toEqual([]);
	});
});

describe('subscriptions/listen (MCP 2026-07-28) across two server processes', () => {
	const started = [];
	let pa;
	let pb;
	beforeAll(async () => {
		[pa, pb] = await Promise.all([
			startProcess('A', redisServer.url, started),
			startProcess('B', redisServer.url, started),
		]);
	});
	afterAll(() => stopProcesses(started));
	const stats = async (p) => (await fetch(p.stats)).json();

	it('a stream opened on A receives what a tool call on B changes; closing it releases the subscription', async () => {
		const notifications = { toolsListChanged: true, resourceSubscriptions: [RESOURCE_URI] };
		const stream = await openListen(pa.url, { id: 'listen-1', notifications, clientName: 'vitest-listener' });
		expect(stream.status).toBe(200);
		expect(stream.contentType).toMatch(/text\/event-stream/);
		const { messages } = stream;
		await eventually(() => messages.some((m) => m.method === 'notifications/subscriptions/acknowledged'), 5000, 'acknowledged');
		expect((await stats(pa)).active).toBe(1);

		expect((await callTool(pb.url, 2, 'touch', 'vitest-listener')).status).toBe(200);
		await eventually(
			() =>
				messages.some((m) => m.method === 'notifications/tools/list_changed') &&
				messages.some((m) => m.method === 'notifications/resources/updated' && m.params.uri === RESOURCE_URI),
			5000,
			'notifications from B on the stream held by A',
		);
		for (const m of messages) expect(m.params._meta['io.modelcontextprotocol/subscriptionId']).toBe('listen-1');

		await stream.close();
		// Released on A; B's next change is wanted by nobody there.
		await eventually(async () => (await stats(pa)).active === 0, 5000, 'subscription released on A');
		const before = (await stats(pa)).unwanted;
		await callTool(pb.url, 3, 'touch', 'vitest-listener');
		await eventually(async () => (await stats(pa)).unwanted >= before + 2, 5000, 'B\'s notifications unwanted on A');
	});
});
