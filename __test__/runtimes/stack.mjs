// The real stack in one runtime (Node, Bun or Deno), from a project that installed the
// packed package: two TMCP servers (demo/server.mjs: McpServer + HttpTransport with our
// managers, on node:http) sharing one Redis, driven by the official MCP SDK client whose
// SSE stream (GET) goes to server A and every other request to server B. Mirrors the
// first test of __test__/transport.spec.mjs, observing Redis through the package itself.
//   <runtime> stack.mjs <redisUrl>
// Prints one JSON line with what it saw.
import process from 'node:process';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ResourceUpdatedNotificationSchema, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { RedisInfoSessionManager, RedisStreamSessionManager } from '@tmcp-rs/session-manager-redis';
import { RESOURCE_URI, startServer } from './server.mjs';

const url = process.argv[2];
async function until(check, ms, what) {
	for (const end = Date.now() + ms; !(await check()); ) {
		if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
		await new Promise((r) => setTimeout(r, 20));
	}
}

const log = [];
const a = await startServer({ name: 'A', redisUrl: url, log: (l) => log.push(l) });
const b = await startServer({ name: 'B', redisUrl: url, log: (l) => log.push(l) });
const streams = new RedisStreamSessionManager(url);
const info = new RedisInfoSessionManager(url);

const routed = [];
const transport = new StreamableHTTPClientTransport(new URL(b.url), {
	fetch: (target, init) => {
		const method = init?.method ?? 'GET';
		const to = method === 'GET' ? a.url : b.url;
		routed.push(`${method}→${to === a.url ? 'A' : 'B'}`);
		return fetch(to, init);
	},
});
const client = new Client({ name: 'stack-client', version: '0.0.1' }, { capabilities: {} });
const notifications = [];
client.setNotificationHandler(ToolListChangedNotificationSchema, (n) => notifications.push(n.method));
client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => notifications.push(`${n.method} ${n.params.uri}`));
await client.connect(transport);
const sessionId = transport.sessionId;
await until(() => streams.has(sessionId), 10_000, 'the stream on A');

const who = JSON.parse((await client.callTool({ name: 'whoami', arguments: {} })).content[0].text);
const storedClientInfo = await info.getClientInfo(sessionId);
await client.subscribeResource({ uri: RESOURCE_URI });
await until(async () => (await info.getSubscriptions(RESOURCE_URI)).includes(sessionId), 10_000, 'the subscription stored');
await client.callTool({ name: 'touch', arguments: {} });
await until(() => notifications.length >= 2, 10_000, 'notifications through A');

await transport.terminateSession();
await client.close();
await until(async () => !(await streams.has(sessionId)), 10_000, 'the session to end');
// Removed with the session: reading it rejects, as upstream's does.
const clientInfoAfter = await info.getClientInfo(sessionId).then(
	(value) => value,
	(error) => (/not found/.test(error.message) ? 'not found' : error.message),
);
const subscribersAfter = await info.getSubscriptions(RESOURCE_URI);

await a.close();
await b.close();
await streams.close();
await info.close();

console.log(
	JSON.stringify({
		runtime: globalThis.Bun ? 'bun' : globalThis.Deno ? 'deno' : 'node',
		session: Boolean(sessionId),
		answeredBy: who.process,
		hydratedClientInfo: who.clientInfo,
		storedClientInfo,
		notifications: notifications.sort(),
		getsToA: routed.filter((r) => r.startsWith('GET')).every((r) => r === 'GET→A') && routed.includes('GET→A'),
		othersToB: routed.filter((r) => !r.startsWith('GET')).every((r) => r.endsWith('→B')),
		clientInfoAfter,
		subscribersAfter,
		managerErrors: log.filter((line) => line.includes('session manager:')),
	}),
);
