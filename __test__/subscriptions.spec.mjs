// RedisSubscriptionManager: the contract of @tmcp/session-manager's
// InMemorySubscriptionManager, across managers (each with its own connections, as in two
// processes), against a real redis-server; and upstream 0.3.0 on the same Redis.
import { RedisSubscriptionManager as UpstreamSubscriptionManager } from '@tmcp/session-manager-redis';
import { describe, expect, it } from 'vitest';
import { createSessionManagers, RedisSubscriptionManager } from '../index.mjs';
import { failOnUnhandledRejections } from './helpers/unhandled.mjs';
import { eventually, freePort } from './helpers/redis.mjs';
import { useCleanups, useTestRedis } from './helpers/suite.mjs';

let server;
let redis;
useTestRedis((s, r) => {
	server = s;
	redis = r;
});
const cleanups = useCleanups();

failOnUnhandledRejections();

function manager(options) {
	const m = new RedisSubscriptionManager(server.url, options);
	cleanups.push(() => m.dispose());
	return m;
}

/** Callbacks that record what they receive; `acknowledge` waits for `ack` when given. */
function stream({ ack, failSend } = {}) {
	const s = {
		received: [],
		closed: [],
		acknowledged: false,
		async acknowledge() {
			if (ack) await ack;
			s.acknowledged = true;
		},
		async send(notification) {
			if (failSend?.(notification)) throw new Error('stream gone');
			s.received.push(notification);
		},
		async close(reason) {
			s.closed.push(reason);
		},
	};
	return s;
}

const toolsChanged = (n) => ({ jsonrpc: '2.0', method: 'notifications/tools/list_changed', params: { n } });
const updated = (uri, n) => ({ jsonrpc: '2.0', method: 'notifications/resources/updated', params: { uri, n } });

describe('RedisSubscriptionManager', () => {
	it('delivers a notification to every matching subscription of every manager, once, in publish order', async () => {
		const a = manager();
		const b = manager();
		const onA = stream();
		const onB = stream();
		const resourceOnly = stream();
		const nothing = stream();
		expect(await a.create({ id: 1, origin: 'o1', filters: { toolsListChanged: true } }, onA)).toBe(true);
		expect(await b.create({ id: 1, origin: 'o2', filters: { toolsListChanged: true, resourceSubscriptions: ['file:///x'] } }, onB)).toBe(true);
		expect(await b.create({ id: 2, origin: 'o2', filters: { resourceSubscriptions: ['file:///x'] } }, resourceOnly)).toBe(true);
		expect(await a.create({ id: 3, origin: 'o1', filters: {} }, nothing)).toBe(true);

		for (let i = 0; i < 50; i++) await (i % 2 ? a : b).send(i % 3 ? toolsChanged(i) : updated('file:///x', i));
		const tools = Array.from({ length: 50 }, (_, i) => i).filter((i) => i % 3);
		const resources = Array.from({ length: 50 }, (_, i) => i).filter((i) => !(i % 3));
		await eventually(() => onA.received.length === tools.length && onB.received.length === 50, 5000, 'deliveries');
		await eventually(() => resourceOnly.received.length === resources.length, 5000, 'resource deliveries');
		expect(onA.received.map((n) => n.params.n)).toEqual(tools);
		expect(onB.received.map((n) => n.params.n)).toEqual(Array.from({ length: 50 }, (_, i) => i));
		expect(resourceOnly.received.map((n) => n.params.n)).toEqual(resources);
		expect(nothing.received).toEqual([]);
		expect(onA.received[0]).toEqual(toolsChanged(1));
	});

	it('a duplicate (origin, id) is refused; JSON-RPC id types are kept apart', async () => {
		const a = manager();
		expect(await a.create({ id: 1, origin: 'o', filters: {} }, stream())).toBe(true);
		expect(await a.create({ id: 1, origin: 'o', filters: {} }, stream())).toBe(false);
		expect(await a.create({ id: '1', origin: 'o', filters: {} }, stream())).toBe(true);
		expect(await a.create({ id: 1, origin: 'other', filters: {} }, stream())).toBe(true);
		expect(await a.close('1', 'o', 'closed')).toBe(true);
		expect(await a.close(1, 'o', 'closed')).toBe(true);
		expect(await a.close(1, 'o', 'closed')).toBe(false);
	});

	it('buffers matching notifications until acknowledge() resolves, then delivers them in order', async () => {
		const a = manager();
		let release;
		const ack = new Promise((r) => (release = r));
		const s = stream({ ack });
		const created = a.create({ id: 'p', origin: 'o', filters: { toolsListChanged: true } }, s);
		// create waits for the channel, then for the acknowledgement.
		await eventually(async () => (await redis.pubSubNumSub(['tmcp:subscriptions']))['tmcp:subscriptions'] >= 1, 5000, 'channel subscribed');
		// A witness with the same filters proves the five reached this process.
		const witness = stream();
		await a.create({ id: 'witness', origin: 'o', filters: { toolsListChanged: true } }, witness);
		for (let i = 0; i < 5; i++) await a.send(toolsChanged(i));
		await eventually(() => witness.received.length === 5, 5000, 'witness deliveries');
		expect(s.received).toEqual([]);
		expect(s.acknowledged).toBe(false);
		release();
		expect(await created).toBe(true);
		await eventually(() => s.received.length === 5, 5000, 'buffered deliveries');
		expect(s.received.map((n) => n.params.n)).toEqual([0, 1, 2, 3, 4]);
	});

	it('a failing acknowledge removes the registration and rejects create', async () => {
		const a = manager();
		const s = stream();
		s.acknowledge = async () => {
			throw new Error('ack refused');
		};
		await expect(a.create({ id: 'f', origin: 'o', filters: { toolsListChanged: true } }, s)).rejects.toThrow('ack refused');
		expect(await a.close('f', 'o', 'closed')).toBe(false);
		// The same (origin, id) can register again.
		expect(await a.create({ id: 'f', origin: 'o', filters: {} }, stream())).toBe(true);
	});

	it('close drains, calls close(reason) once, is idempotent, and nothing is sent after', async () => {
		const a = manager();
		const s = stream();
		await a.create({ id: 'c', origin: 'o', filters: { promptsListChanged: true } }, s);
		await a.send({ jsonrpc: '2.0', method: 'notifications/prompts/list_changed', params: { n: 1 } });
		await eventually(() => s.received.length === 1, 5000, 'first delivery');
		const first = a.close('c', 'o', 'cancelled');
		const second = a.close('c', 'o', 'cancelled');
		expect(second).toBe(first);
		expect(await first).toBe(true);
		expect(s.closed).toEqual(['cancelled']);
		await a.send({ jsonrpc: '2.0', method: 'notifications/prompts/list_changed', params: { n: 2 } });
		const witness = stream();
		await a.create({ id: 'w', origin: 'o', filters: { promptsListChanged: true } }, witness);
		await a.send({ jsonrpc: '2.0', method: 'notifications/prompts/list_changed', params: { n: 3 } });
		// The witness may also get n=2 if it was still on its way when the witness was
		// registered (pub/sub fan-out between processes); the closed one gets neither.
		await eventually(() => witness.received.some((n) => n.params.n === 3), 5000, 'witness delivery');
		expect(s.received.map((n) => n.params.n)).toEqual([1]);
	});

	it('closeAll closes one origin or all, with the reason given', async () => {
		const a = manager();
		const s1 = stream();
		const s2 = stream();
		const s3 = stream();
		await a.create({ id: 1, origin: 'x', filters: {} }, s1);
		await a.create({ id: 2, origin: 'x', filters: {} }, s2);
		await a.create({ id: 1, origin: 'y', filters: {} }, s3);
		await a.closeAll('x', 'closed');
		expect([s1.closed, s2.closed, s3.closed]).toEqual([['closed'], ['closed'], []]);
		await a.closeAll();
		expect(s3.closed).toEqual(['cancelled']);
		await a.closeAll();
		expect(s3.closed).toEqual(['cancelled']);
	});

	it('one failed send does not poison later ones', async () => {
		const a = manager({ onError: () => {} });
		const s = stream({ failSend: (n) => n.params.n === 1 });
		await a.create({ id: 'q', origin: 'o', filters: { toolsListChanged: true } }, s);
		for (let i = 0; i < 3; i++) await a.send(toolsChanged(i));
		await eventually(() => s.received.length === 2, 5000, 'deliveries');
		expect(s.received.map((n) => n.params.n)).toEqual([0, 2]);
	});

	it('malformed and foreign messages are ignored and counted; unwanted ones never reach JavaScript', async () => {
		const a = manager();
		const s = stream();
		await a.create({ id: 'm', origin: 'o', filters: { toolsListChanged: true } }, s);
		await redis.publish('tmcp:subscriptions', 'not json');
		await redis.publish('tmcp:subscriptions', '{"id":1}');
		await redis.publish('tmcp:subscriptions', JSON.stringify(updated('file:///nobody', 0)));
		await a.send(toolsChanged(7));
		await eventually(() => s.received.length === 1, 5000, 'delivery');
		expect(a.stats()).toMatchObject({ active: 1, ignored: 2, unwanted: 1 });
	});

	it('keyPrefix applies to the channel', async () => {
		const a = manager({ keyPrefix: 'app1:' });
		const b = manager();
		const onA = stream();
		const onB = stream();
		await a.create({ id: 1, origin: 'o', filters: { toolsListChanged: true } }, onA);
		await b.create({ id: 1, origin: 'o', filters: { toolsListChanged: true } }, onB);
		expect((await redis.pubSubNumSub(['app1:tmcp:subscriptions']))['app1:tmcp:subscriptions']).toBe(1);
		await a.send(toolsChanged(1));
		await b.send(toolsChanged(2));
		await eventually(() => onA.received.length === 1 && onB.received.length === 1, 5000, 'deliveries');
		expect(onA.received[0].params.n).toBe(1);
		expect(onB.received[0].params.n).toBe(2);
	});

	it('bad input is a clear TypeError', async () => {
		const a = manager();
		await expect(a.create(null, stream())).rejects.toThrow(TypeError);
		await expect(a.create({ id: {}, origin: 'o', filters: {} }, stream())).rejects.toThrow(/subscription.id/);
		await expect(a.create({ id: 1, origin: 'o', filters: { resourceSubscriptions: 'x' } }, stream())).rejects.toThrow(/resourceSubscriptions/);
		await expect(a.create({ id: 1, origin: 'o', filters: {} }, {})).rejects.toThrow(/callbacks/);
		await expect(a.send('x')).rejects.toThrow(TypeError);
		await expect(a.send({ params: {} })).rejects.toThrow(/string method/);
	});

	it('create with Redis unreachable rejects within commandTimeout; dispose() releases', async () => {
		const port = await freePort();
		const a = new RedisSubscriptionManager(`redis://127.0.0.1:${port}`, { commandTimeout: 800, connectTimeout: 300 });
		const error = await a.create({ id: 1, origin: 'o', filters: {} }, stream()).catch((e) => e);
		expect(error).toBeInstanceOf(Error);
		expect(error.message).toMatch(/Could not create subscription: .*(connect|Redis)/);
		await a.dispose();
		await expect(a.create({ id: 2, origin: 'o', filters: {} }, stream())).rejects.toThrow(/disposed/);
	});

	it('built by createSessionManagers on the shared connection', async () => {
		const { streams, info, subscriptions } = createSessionManagers(server.url);
		cleanups.push(() => streams.close(), () => info.close(), () => subscriptions.dispose());
		const s = stream();
		await subscriptions.create({ id: 1, origin: 'o', filters: { resourcesListChanged: true } }, s);
		await subscriptions.send({ jsonrpc: '2.0', method: 'notifications/resources/list_changed' });
		await eventually(() => s.received.length === 1, 5000, 'delivery');
	});
});

describe('interop with upstream 0.3.0 on the same Redis', () => {
	it('both directions: same channel, same JSON', async () => {
		const ours = manager();
		const upstream = new UpstreamSubscriptionManager(server.url);
		const onOurs = stream();
		const onUpstream = stream();
		await ours.create({ id: 1, origin: 'o', filters: { resourceSubscriptions: ['file:///u'] } }, onOurs);
		await upstream.create({ id: 1, origin: 'o', filters: { resourceSubscriptions: ['file:///u'] } }, onUpstream);
		await upstream.send(updated('file:///u', 1));
		await ours.send(updated('file:///u', 2));
		await eventually(() => onOurs.received.length === 2 && onUpstream.received.length === 2, 5000, 'deliveries');
		expect(onOurs.received).toEqual([updated('file:///u', 1), updated('file:///u', 2)]);
		expect(onUpstream.received).toEqual([updated('file:///u', 1), updated('file:///u', 2)]);
		await upstream.closeAll();
	});
});
