// Redis faults: restarts, outages and freezes, each on redis-server processes this file
// starts and stops by PID. Any unhandled rejection or uncaught exception fails the file.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSessionManagers, RedisInfoSessionManager, RedisStreamSessionManager } from '../index.mjs';
import { spawnPeer } from './helpers/peer.mjs';
import { eventually, freePort, observer, recorder, startRedis } from './helpers/redis.mjs';
import { useCleanups } from './helpers/suite.mjs';

const unhandled = [];
const onUnhandled = (e) => unhandled.push(e);
const cleanups = useCleanups();

beforeAll(() => process.on('unhandledRejection', onUnhandled));
afterAll(() => {
	process.off('unhandledRejection', onUnhandled);
	expect(unhandled).toEqual([]);
});

/** A redis-server of this test and a plain client on it, both ended after the test. */
async function serverWithObserver() {
	const server = await startRedis();
	cleanups.push(() => server.stop());
	const redis = await observer(server.url);
	cleanups.push(() => redis.quit());
	return { server, redis };
}

/** Added to a timeout a call must keep: the event loop of a busy machine may answer late. */
const GRACE_MS = 1500;

/** Fails if `promise` has not settled within `ms` (a bound on hanging, not a measurement). */
function within(promise, ms, what) {
	let timer;
	const guard = new Promise((_, reject) => {
		timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
	});
	return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

describe('redis-server killed and restarted on the same port', () => {
	// A short outage, and one longer than the reconnect back-off of a single attempt.
	it.each([0, 8000])('live sessions in two processes come back by themselves (down %i ms)', async (downMs) => {
		let server = await startRedis();
		cleanups.push(() => server.stop());
		const port = server.port;
		const p1 = await spawnPeer('ours', server.url, { commandTimeout: 2000 });
		const p2 = await spawnPeer('ours', server.url, { commandTimeout: 2000 });
		cleanups.push(() => p1.kill(), () => p2.kill());
		await p1.request('create', { session: 'r1' });
		await p2.request('create', { session: 'r2' });
		await p1.request('info', { method: 'setClientInfo', args: ['r1', { name: 'c', version: '1' }] });

		await server.stop('SIGKILL');
		// Calls made during the outage reject; setters without await stay quiet.
		await expect(p1.request('streams', { method: 'has', args: ['r1'] })).rejects.toThrow(/Could not check stream session r1/);
		await new Promise((r) => setTimeout(r, downMs));
		server = await startRedis({ port });
		const redis = await observer(server.url);
		cleanups.push(() => redis.quit());

		// Without any call from the app: keys re-asserted, subscriptions restored.
		await eventually(
			async () => (await redis.exists(['available:session:r1', 'available:session:r2'])) === 2,
			15_000,
			'liveness keys re-asserted',
		);
		await eventually(async () => {
			const subs = await redis.pubSubNumSub(['session:r1', 'session:r2']);
			return subs['session:r1'] === 1 && subs['session:r2'] === 1;
		}, 15_000, 'subscriptions restored');

		expect(await p2.request('streams', { method: 'has', args: ['r1'] })).toBe(true);
		await p2.request('streams', { method: 'send', args: [['r1'], 'after restart 1'] });
		await p1.request('streams', { method: 'send', args: [['r2'], 'after restart 2'] });
		await eventually(async () => (await p1.request('received', { session: 'r1' })).chunks.includes('after restart 1'));
		await eventually(async () => (await p2.request('received', { session: 'r2' })).chunks.includes('after restart 2'));
		await p1.request('info', { method: 'setLogLevel', args: ['r1', 'info'] });
		expect(await p2.request('info', { method: 'getLogLevel', args: ['r1'] })).toBe('info');

		expect(await p1.request('failures')).toEqual([]);
		expect(await p2.request('failures')).toEqual([]);
		expect(p1.events.some((e) => e.event === 'onError' && /lost the Redis pub\/sub connection/.test(e.error))).toBe(true);
	});
});

describe('pub/sub connection dropped by Redis', () => {
	it('is reported, restored by itself, and deliveries go on', async () => {
		const { server, redis } = await serverWithObserver();
		const errors = [];
		const streams = new RedisStreamSessionManager(server.url, { onError: (e) => errors.push(e.message) });
		cleanups.push(() => streams.close());
		const rec = recorder();
		await streams.create('k1', rec);

		await redis.sendCommand(['CLIENT', 'KILL', 'TYPE', 'pubsub']);
		await eventually(() => errors.some((m) => /lost the Redis pub\/sub connection/.test(m)), 5000, 'loss reported');
		await eventually(async () => (await redis.pubSubNumSub(['session:k1']))['session:k1'] === 1, 5000, 'resubscribed');
		await streams.send(['k1'], 'after kill');
		await eventually(() => rec.chunks.includes('after kill'), 5000, 'delivery after kill');
		// Sessions created after the loss subscribe on the new connection.
		const rec2 = recorder();
		await streams.create('k2', rec2);
		await streams.send(['k2'], 'new session');
		await eventually(() => rec2.chunks.includes('new session'), 5000, 'delivery to a new session');
		expect(await redis.exists('available:session:k1')).toBe(1);
	});
});

describe('command connection closed by Redis', () => {
	it('is noticed, and the next calls reconnect and are answered', async () => {
		const { server, redis } = await serverWithObserver();
		const info = new RedisInfoSessionManager(server.url);
		cleanups.push(() => info.close());
		await info.setClientInfo('c1', { name: 'a' });

		// A clean close from the server's side (end of stream), not an error.
		expect(await redis.sendCommand(['CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes'])).toBe(1);
		// A call that reached the closing socket fails as lost (never replayed); later ones
		// go over a new connection.
		const outcomes = [];
		await eventually(async () => {
			try {
				outcomes.push((await info.getClientInfo('c1')).name);
				return true;
			} catch (error) {
				outcomes.push(error.message);
				return false;
			}
		}, 5000, 'a call answered after the close');
		expect(outcomes.at(-1)).toBe('a');
		for (const failure of outcomes.slice(0, -1)) expect(failure).toMatch(/connection to Redis lost/);
		await info.setClientInfo('c1', { name: 'b' });
		expect(await info.getClientInfo('c1')).toEqual({ name: 'b' });
	});
});

describe('redis unreachable', () => {
	it('every method rejects with a clear error within the timeout, and works once Redis is up', async () => {
		const port = await freePort();
		const url = `redis://127.0.0.1:${port}`;
		const errors = [];
		const commandTimeout = 1500;
		const options = { commandTimeout, connectTimeout: 500, onError: (e) => errors.push(e) };
		const info = new RedisInfoSessionManager(url, options);
		const streams = new RedisStreamSessionManager(url, options);
		cleanups.push(() => info.close(), () => streams.close());

		const calls = {
			getClientInfo: info.getClientInfo('u'),
			setClientInfo: info.setClientInfo('u', { name: 'x', version: '1' }),
			getLogLevel: info.getLogLevel('u'),
			getSubscriptions: info.getSubscriptions('file:///u'),
			delete: info.delete('u'),
			has: streams.has('u'),
			send: streams.send(['u'], 'x'),
			broadcast: streams.send(undefined, 'x'),
			create: streams.create('u', recorder()),
			streamDelete: streams.delete('u'),
		};
		// Handlers attached at once: the calls run concurrently. Each must settle within
		// commandTimeout of the calls, plus a grace for a busy machine's event loop (a
		// bound on the wait, not a measurement).
		const settled = Object.entries(calls).map(([name, call]) => [name, call.then(() => null, (e) => e)]);
		const deadline = Date.now() + commandTimeout + GRACE_MS;
		for (const [name, outcome] of settled) {
			const error = await within(outcome, Math.max(0, deadline - Date.now()), `${name} (commandTimeout ${commandTimeout} ms + ${GRACE_MS} ms)`);
			expect(error, name).toBeInstanceOf(Error);
			expect(error.message, name).toMatch(/Redis|connect/);
		}
		// Dropped setter promises: reported, never unhandled.
		info.setLogLevel('u', 'debug');
		info.addSubscription('u', 'file:///u');
		await eventually(() => errors.length >= 3, 10_000, 'setter failures reported');

		const server = await startRedis({ port });
		cleanups.push(() => server.stop());
		await eventually(
			() => info.setClientInfo('u', { name: 'up', version: '2' }).then(() => true, () => false),
			15_000,
			'info works once Redis is up',
		);
		expect(await info.getClientInfo('u')).toEqual({ name: 'up', version: '2' });
		const rec = recorder();
		await eventually(() => streams.create('u2', rec).then(() => true, () => false), 15_000, 'create works');
		await streams.send(['u2'], 'hello');
		await eventually(() => rec.chunks.includes('hello'), 5000, 'delivery');
	});
});

describe('redis frozen (SIGSTOP)', () => {
	it('calls reject with a timeout error instead of hanging, and recover after SIGCONT', async () => {
		const server = await startRedis();
		cleanups.push(async () => {
			server.signal('SIGCONT');
			await server.stop();
		});
		const info = new RedisInfoSessionManager(server.url, { commandTimeout: 1000 });
		const streams = new RedisStreamSessionManager(server.url, { commandTimeout: 1000 });
		cleanups.push(() => info.close(), () => streams.close());
		const rec = recorder();
		await streams.create('f1', rec);
		await info.setClientInfo('f1', { name: 'x', version: '1' });

		server.signal('SIGSTOP');
		const settled = Object.entries({
			get: info.getClientInfo('f1'),
			set: info.setLogLevel('f1', 'info'),
			has: streams.has('f1'),
			send: streams.send(['f1'], 'frozen'),
			create: streams.create('f2', recorder()),
		}).map(([name, call]) => [name, call.then(() => null, (e) => e)]);
		for (const [name, outcome] of settled) {
			const error = await within(outcome, 10_000, name);
			expect(error, name).toBeInstanceOf(Error);
			expect(error.message, name).toMatch(/did not (answer|confirm)|timed out|in time/);
		}
		server.signal('SIGCONT');
		await eventually(() => info.getClientInfo('f1').then(() => true, () => false), 10_000, 'recovered');
		expect(await info.getClientInfo('f1')).toEqual({ name: 'x', version: '1' });
		await streams.send(['f1'], 'thawed');
		await eventually(() => rec.chunks.includes('thawed'), 5000, 'delivery after SIGCONT');
	});
});

describe('close() while Redis is down', () => {
	it.each([
		['stopped', (server) => server.stop('SIGKILL')],
		['frozen (SIGSTOP)', (server) => server.signal('SIGSTOP')],
	])('%s: close() resolves, local streams are closed, the failure goes to onError', async (name, down) => {
		const server = await startRedis();
		let frozen = false;
		cleanups.push(async () => {
			if (frozen) server.signal('SIGCONT');
			await server.stop();
		});
		const errors = [];
		const options = { commandTimeout: 1000, connectTimeout: 500, onError: (e) => errors.push(e.message) };
		const streams = new RedisStreamSessionManager(server.url, options);
		const info = new RedisInfoSessionManager(server.url, options);
		const { streams: sharedStreams, info: sharedInfo } = createSessionManagers(server.url, options);
		const rec = recorder();
		const sharedRec = recorder();
		await streams.create('down1', rec);
		await sharedStreams.create('down2', sharedRec);
		await info.setClientInfo('down1', { name: 'x', version: '1' });

		frozen = name !== 'stopped';
		await down(server);
		for (const [name, closing] of Object.entries({
			'streams.close()': streams.close(),
			'info.close()': info.close(),
			'shared streams.close()': sharedStreams.close(),
			'shared info.close()': sharedInfo.close(),
		})) {
			await expect(within(closing, 10_000, name), name).resolves.toBeUndefined();
		}
		expect(rec.closed).toBe(true);
		expect(sharedRec.closed).toBe(true);
		// Removing the liveness keys failed: reported (they expire by their TTL).
		expect(errors.filter((m) => /^Could not close the stream session manager: /.test(m))).toHaveLength(2);
		await expect(streams.send(['down1'], 'x')).rejects.toThrow(/closed/);
		await expect(info.getClientInfo('down1')).rejects.toThrow(/closed/);
	});
});

describe('a Redis that lost its data (FLUSHALL)', () => {
	it('is told apart from a delete elsewhere by the data epoch: keys written again, streams kept', async () => {
		const { server, redis } = await serverWithObserver();
		const errors = [];
		// A refresh (and the epoch check with it) every second.
		const streams = new RedisStreamSessionManager(server.url, { sessionTtlSeconds: 3, onError: (e) => errors.push(e.message) });
		const other = new RedisStreamSessionManager(server.url);
		cleanups.push(() => streams.close(), () => other.close());
		const rec = recorder();
		await streams.create('fl1', rec);
		await streams.create('fl2', recorder());
		expect(await redis.exists('tmcp:epoch')).toBe(1);

		await redis.flushAll();
		expect(await other.has('fl1')).toBe(false);
		// A key gone while the epoch is intact means "deleted elsewhere" (the stream would be
		// closed); with the epoch gone too, Redis lost its data: every key is written again.
		await eventually(async () => (await other.has('fl1')) && (await other.has('fl2')), 10_000, 'the liveness keys written again');
		expect(await redis.exists('tmcp:epoch')).toBe(1);
		expect(rec.closed).toBe(false);
		await other.send(['fl1'], 'after the flush');
		await eventually(() => rec.chunks.includes('after the flush'), 5000, 'delivery after the flush');
		expect(rec.closed).toBe(false);
		expect(errors).toEqual([]);
	});
});

describe('redis refusing writes (maxmemory reached)', () => {
	it('writes reject with Redis’s error, the failed liveness refresh is reported, reads go on', async () => {
		const { server, redis } = await serverWithObserver();
		const errors = [];
		const options = { sessionTtlSeconds: 3, onError: (e) => errors.push(e.message) };
		const info = new RedisInfoSessionManager(server.url, options);
		const streams = new RedisStreamSessionManager(server.url, options);
		cleanups.push(() => info.close(), () => streams.close());
		await info.setClientInfo('m', { name: 'x', version: '1' });
		await streams.create('m', recorder());

		await redis.configSet({ maxmemory: '1', 'maxmemory-policy': 'noeviction' });
		await expect(info.setLogLevel('m', 'info')).rejects.toThrow(/Could not store log level for session m: Redis error: OOM command not allowed/);
		expect(await info.getClientInfo('m')).toEqual({ name: 'x', version: '1' });
		await eventually(() => errors.some((m) => /could not refresh 1 session liveness key\(s\): .*OOM/.test(m)), 5000, 'refresh failure reported');

		await redis.configSet({ maxmemory: '0' });
		await info.setLogLevel('m', 'info');
		expect(await info.getLogLevel('m')).toBe('info');
	});
});
