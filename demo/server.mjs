// A TMCP server (McpServer + HttpTransport) whose sessions live in Redis through our
// managers (or upstream's: `upstream`, for `npm run demo -- --mixed`). Imported by the
// demo and the tests; run directly it serves until SIGTERM:
//   node demo/server.mjs <name> <port> <redisUrl> [optionsJson] [upstream]
import { createServer } from 'node:http';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { McpServer } from 'tmcp';
import { HttpTransport } from '@tmcp/transport-http';
import { createSessionManagers } from '../index.mjs';

export const RESOURCE_URI = 'demo://counter';

/**
 * The three managers of @tmcp/session-manager-redis (upstream), as a process that has not
 * migrated yet runs them. They take no options and have no close().
 * @param {string} redisUrl
 */
async function upstreamManagers(redisUrl) {
	const upstream = await import('@tmcp/session-manager-redis');
	return {
		streams: new upstream.RedisStreamSessionManager(redisUrl),
		info: new upstream.RedisInfoSessionManager(redisUrl),
		subscriptions: new upstream.RedisSubscriptionManager(redisUrl),
	};
}

/**
 * @param {{ name: string, port?: number, redisUrl: string, options?: object, upstream?: boolean,
 *   log?: (line: string) => void }} options `upstream`: upstream's managers instead of ours
 *   (`options` is then ignored)
 */
export async function startServer({ name, port = 0, redisUrl, options = {}, upstream = false, log = () => {} }) {
	const server = new McpServer(
		{ name: `demo-${name}`, version: '1.0.0', description: `demo server ${name}` },
		{
			adapter: undefined,
			capabilities: {
				tools: { listChanged: true },
				resources: { subscribe: true, listChanged: true },
			},
		},
	);
	let counter = 0;
	server.resource(
		{ name: 'counter', description: 'A counter the touch tool increments', uri: RESOURCE_URI },
		async (uri) => ({ contents: [{ uri, text: String(counter) }] }),
	);
	server.tool({ name: 'whoami', description: 'Which process answered, and what it knows of the client' }, async () => {
		const info = server.ctx.sessionInfo;
		log(`[${name}] tools/call whoami: hydrated client info from Redis: ${JSON.stringify(info?.clientInfo)}`);
		return {
			content: [
				{
					type: 'text',
					text: JSON.stringify({
						process: name,
						pid: process.pid,
						clientInfo: info?.clientInfo,
						clientCapabilities: info?.clientCapabilities,
						logLevel: info?.logLevel,
					}),
				},
			],
		};
	});
	server.tool({ name: 'touch', description: 'Changes the counter resource and the tool list' }, async () => {
		counter++;
		log(`[${name}] tools/call touch: counter=${counter}; notifying subscribers and every stream`);
		server.changed('resource', RESOURCE_URI);
		server.changed('tools');
		return { content: [{ type: 'text', text: `counter is ${counter}` }] };
	});

	const managers = upstream
		? await upstreamManagers(redisUrl)
		: createSessionManagers(redisUrl, {
				...options,
				onError: (error) => log(`[${name}] session manager: ${error.message}`),
			});
	const transport = new HttpTransport(server, {
		path: '/mcp',
		sessionManager: { streams: managers.streams, info: managers.info },
		// subscriptions/listen streams (MCP 2026-07-28) shared between processes too.
		subscriptionManager: managers.subscriptions,
	});

	const http = createServer(async (req, res) => {
		if (req.method === 'GET' && req.url === '/stats') {
			// What this process's subscription manager holds and has dropped (for the demo
			// and the tests).
			res.writeHead(200, { 'content-type': 'application/json' });
			res.end(JSON.stringify(statsOf(managers.subscriptions)));
			return;
		}
		if (req.method === 'GET' && req.url === '/stats/all') {
			// Every manager's stats() (README "Observability"), printed by the demo at the end.
			res.writeHead(200, { 'content-type': 'application/json' });
			res.end(
				JSON.stringify({
					streams: statsOf(managers.streams),
					info: statsOf(managers.info),
					subscriptions: statsOf(managers.subscriptions),
				}),
			);
			return;
		}
		const abort = new AbortController();
		res.on('close', () => abort.abort());
		try {
			const headers = new Headers();
			for (const [key, value] of Object.entries(req.headers)) {
				if (Array.isArray(value)) value.forEach((v) => headers.append(key, v));
				else if (value !== undefined) headers.set(key, value);
			}
			/** @type {RequestInit & { duplex?: 'half' }} */
			const init = { method: req.method, headers, signal: abort.signal };
			if (req.method !== 'GET' && req.method !== 'HEAD') {
				init.body = /** @type {any} */ (Readable.toWeb(req));
				init.duplex = 'half';
			}
			log(`[${name}] ${req.method} ${req.url}`);
			const response = await transport.respond(new Request(`http://127.0.0.1${req.url}`, init));
			if (!response) {
				res.writeHead(404).end();
				return;
			}
			res.writeHead(response.status, Object.fromEntries(response.headers));
			if (!response.body) {
				res.end();
				return;
			}
			res.flushHeaders();
			const reader = response.body.getReader();
			res.on('close', () => reader.cancel().catch(() => {}));
			for (;;) {
				const { done, value } = await reader.read();
				if (done) break;
				res.write(value);
			}
			res.end();
		} catch (error) {
			if (!res.headersSent) res.writeHead(500);
			res.end();
			if (!abort.signal.aborted) log(`[${name}] request failed: ${error}`);
		}
	});
	await new Promise((resolve) => http.listen(port, '127.0.0.1', () => resolve(undefined)));
	const address = /** @type {import('node:net').AddressInfo} */ (http.address());
	return {
		url: `http://127.0.0.1:${address.port}/mcp`,
		port: address.port,
		managers,
		async close() {
			http.closeAllConnections();
			await new Promise((resolve) => http.close(() => resolve(undefined)));
			// Upstream's managers cannot be closed: the process exits with them.
			if (upstream) return;
			await managers.streams.close();
			await managers.info.close();
			await managers.subscriptions.dispose();
		},
	};
}

/**
 * A manager's stats() (README "Observability"); null for upstream's, which has none.
 * @param {any} manager
 */
function statsOf(manager) {
	return typeof manager.stats === 'function' ? manager.stats() : null;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
	const [name, port, redisUrl, optionsJson, implementation] = process.argv.slice(2);
	const running = await startServer({
		name,
		port: Number(port),
		redisUrl,
		options: optionsJson ? JSON.parse(optionsJson) : {},
		upstream: implementation === 'upstream',
		log: (line) => console.log(line),
	});
	console.log(`READY ${running.port}`);
	process.on('SIGTERM', async () => {
		await running.close();
		process.exit(0);
	});
}
