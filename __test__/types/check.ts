// Compiled with `tsc --noEmit` by package.spec.mjs: our classes must be accepted wherever
// upstream's are (@tmcp/session-manager's types, HttpTransport and SseTransport).
import type { InfoSessionManager, StreamSessionManager, SubscriptionManager } from '@tmcp/session-manager';
import { HttpTransport } from '@tmcp/transport-http';
import { SseTransport } from '@tmcp/transport-sse';
import { McpServer } from 'tmcp';
import {
	createSessionManagers,
	RedisInfoSessionManager,
	RedisStreamSessionManager,
	RedisSubscriptionManager,
	type RedisNode,
} from '@tmcp-rs/session-manager-redis';

const server = new McpServer({ name: 'types', version: '1.0.0', description: 'types' }, { adapter: undefined, capabilities: {} });

const streams: StreamSessionManager = new RedisStreamSessionManager('redis://localhost');
const info: InfoSessionManager = new RedisInfoSessionManager('redis://localhost', { keyPrefix: 'a:', onError: (e) => e.message });

new HttpTransport(server, { path: '/mcp', sessionManager: { streams, info } });
new HttpTransport(server, {
	path: '/mcp',
	sessionManager: {
		streams: new RedisStreamSessionManager('redis://localhost'),
		info: new RedisInfoSessionManager('redis://localhost'),
	},
});
new HttpTransport(server, { path: '/mcp', sessionManager: createSessionManagers('redis://localhost') });
new SseTransport(server, { sessionManager: { streams, info } });

const subscriptions: SubscriptionManager = new RedisSubscriptionManager('redis://localhost', { keyPrefix: 'a:' });
new HttpTransport(server, { path: '/mcp', sessionManager: { streams, info }, subscriptionManager: subscriptions });
const trio = createSessionManagers('redis://localhost');
new HttpTransport(server, {
	path: '/mcp',
	sessionManager: { streams: trio.streams, info: trio.info },
	subscriptionManager: trio.subscriptions,
});
async function lifecycle() {
	await using managed = new RedisSubscriptionManager('redis://localhost');
	await managed.close('id', 'origin', 'cancelled');
	await managed.dispose();
}
void lifecycle;
new SseTransport(server, { sessionManager: createSessionManagers('redis://localhost') });

async function usage(m: RedisInfoSessionManager, s: RedisStreamSessionManager) {
	const level: 'debug' | 'info' | 'notice' | 'warning' | 'error' | 'critical' | 'alert' | 'emergency' | undefined =
		await m.getLogLevel('x');
	const live: boolean = await s.has('x');
	await s.close();
	await using disposable = new RedisInfoSessionManager('redis://localhost');
	return [level, live, disposable];
}
void usage;

new RedisInfoSessionManager('redis://mymaster', { sentinel: { nodes: ['127.0.0.1:26379'], password: 'x' } });
const sentinelNodes: RedisNode[] = ['127.0.0.1:26379', 'rediss://user:pw@127.0.0.2:26379', { host: '127.0.0.3', port: 26379 }];
new RedisInfoSessionManager('redis://mymaster', { sentinel: { nodes: sentinelNodes } });
// @ts-expect-error sentinel nodes are strings or { host, port }
new RedisInfoSessionManager('redis://mymaster', { sentinel: { nodes: [26379] } });
// @ts-expect-error a node object has a host and a port, nothing else
new RedisInfoSessionManager('redis://mymaster', { sentinel: { nodes: [{ host: 'h', port: 1, password: 'x' }] } });
new RedisStreamSessionManager('redis://10.0.0.1:7000', { cluster: true });
new RedisInfoSessionManager('redis://10.0.0.1:7000', { cluster: { nodes: ['10.0.0.2:7000', 'redis://10.0.0.3:7000', { host: '10.0.0.4', port: 7000 }] } });
// @ts-expect-error cluster is true or { nodes }
new RedisInfoSessionManager('redis://10.0.0.1:7000', { cluster: 'yes' });
// @ts-expect-error unknown options are rejected
new RedisInfoSessionManager('redis://localhost', { ttl: 5 });
// @ts-expect-error the URL is a string
new RedisStreamSessionManager(6379);
// @ts-expect-error log levels are MCP's
new RedisInfoSessionManager('redis://localhost').setLogLevel('x', 'verbose');

// Observability (README "Observability"): stats() of each manager, error codes, channels,
// and the otel entry's types.
import { CHANNELS, ERROR_CODES, type StreamSessionManagerStats, type TmcpRedisErrorCode } from '@tmcp-rs/session-manager-redis';
import { instrument } from '@tmcp-rs/session-manager-redis/otel';
const figures: StreamSessionManagerStats = new RedisStreamSessionManager('redis://localhost').stats();
const confirmed: number = figures.subscriptionsConfirmed + new RedisSubscriptionManager('redis://localhost').stats().active;
const commands: number = new RedisInfoSessionManager('redis://localhost').stats().commands;
void confirmed;
void commands;
const code: TmcpRedisErrorCode = ERROR_CODES.NOT_SENT;
// @ts-expect-error codes are the listed ones
const wrong: TmcpRedisErrorCode = 'TMCP_REDIS_OTHER';
void code;
void wrong;
const channel: 'tmcp-redis:command' = CHANNELS.command;
void channel;
instrument({ meterProvider: { getMeter: () => ({}) } }).dispose();
instrument();
